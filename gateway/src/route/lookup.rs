//! The aggregator's routing API as the gateway asks it: `GET /api/v1/units/{serial}/route-status`
//! and `GET /api/v1/routes/{part}`, with `[route] lookup_timeout_ms` and the bearer token.

use std::time::Duration;

use serde::Deserialize;

use super::RouteSection;
use super::cache::Route;

/// One operation of a `route-status` answer.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct OperationStatus {
    pub station: String,
    pub operation: String,
    #[serde(default)]
    pub required: bool,
    /// `passed`, `failed`, `missing` or `wrong_equipment`.
    pub status: String,
    /// The equipment of the latest attempt.
    #[serde(default)]
    pub equipment: Option<String>,
}

/// The fields of a `route-status` answer the gateway uses.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RouteStatus {
    pub part: Option<String>,
    pub route_version: Option<String>,
    #[serde(default)]
    pub operations: Vec<OperationStatus>,
    pub allowed: Option<bool>,
    pub reason: Option<String>,
}

/// The root of a `trace/lot/{lot}?max_depth=0` answer: the lot as the aggregator knows it.
#[derive(Debug, Deserialize)]
struct LotTrace {
    root: LotNode,
}

#[derive(Debug, Deserialize)]
struct LotNode {
    part: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RoutesOfPart {
    versions: Vec<Route>,
}

/// An HTTP client of the aggregator.
#[derive(Debug, Clone)]
pub(crate) struct Lookup {
    client: reqwest::Client,
    base: reqwest::Url,
    token: Option<String>,
    timeout: Duration,
}

impl Lookup {
    /// A client for a validated `[route]`.
    pub(crate) fn new(r: &RouteSection) -> anyhow::Result<Lookup> {
        let timeout = Duration::from_millis(r.lookup_timeout_ms);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        Ok(Lookup {
            client,
            base: reqwest::Url::parse(&r.aggregator_url)?,
            token: r
                .token()
                .map_err(|e| anyhow::anyhow!("route.token_file: {e}"))?
                .map(str::to_owned),
            timeout,
        })
    }

    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut u = self.base.clone();
        if let Ok(mut p) = u.path_segments_mut() {
            p.pop_if_empty().extend(segments);
        }
        u
    }

    /// GET `url` as JSON; any failure (connection, timeout, status other than 200, body) is
    /// the text naming it.
    async fn get<T: serde::de::DeserializeOwned>(&self, url: reqwest::Url) -> Result<T, String> {
        let mut req = self.client.get(url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        // reqwest's own timeout covers the request; this one the body too, whatever happens.
        let work = async {
            let resp = req.send().await.map_err(describe)?;
            let status = resp.status();
            if status != reqwest::StatusCode::OK {
                return Err(format!("answered {status}"));
            }
            resp.json::<T>()
                .await
                .map_err(|e| format!("bad answer: {e}"))
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }

    /// Where `serial` stands on its route and whether it may be worked at `station`.
    pub(crate) async fn route_status(
        &self,
        serial: &str,
        station: &str,
        part: Option<&str>,
    ) -> Result<RouteStatus, String> {
        let mut url = self.url(&["api", "v1", "units", serial, "route-status"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("station", station);
            if let Some(p) = part {
                q.append_pair("part", p);
            }
        }
        self.get(url).await
    }

    /// The part of lot `lot` as the aggregator knows it (`Ok(None)`: an unknown lot, or one
    /// received without a part): the root of its trace, no levels.
    pub(crate) async fn lot_part(&self, lot: &str) -> Result<Option<String>, String> {
        let mut url = self.url(&["api", "v1", "trace", "lot", lot]);
        url.query_pairs_mut().append_pair("max_depth", "0");
        match self.get::<LotTrace>(url).await {
            Ok(t) => Ok(t.root.part),
            Err(e) if e.starts_with("answered 404") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every route version of `part`, oldest first (`Ok(None)`: the part has no route).
    pub(crate) async fn routes(&self, part: &str) -> Result<Option<Vec<Route>>, String> {
        let url = self.url(&["api", "v1", "routes", part]);
        match self.get::<RoutesOfPart>(url).await {
            Ok(r) => Ok(Some(r.versions)),
            Err(e) if e.starts_with("answered 404") => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        format!("cannot connect: {e}")
    } else {
        e.to_string()
    }
}
