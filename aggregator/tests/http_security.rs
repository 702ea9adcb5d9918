//! The HTTP side of docs/security.md with the real `threadline-aggregator run` binary (SQLite,
//! its embedded broker on a free port): web UI sign-in with a token and a session cookie, the
//! CSRF rule for cookie-authenticated writes, sign-out; and HTTPS with a private CA
//! (`[http] tls_cert_file` / `tls_key_file`, certificates made by `openssl`), plain HTTP on the
//! same port not answered.

#![allow(clippy::unwrap_used)]

mod store_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use serde_json::json;
use store_support::{eventually, free_port};
use threadline_shared::testing::{make_tls_certs, skip_or_fail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const READ_TOKEN: &str = "read-s3cret-token";
const WRITE_TOKEN: &str = "write-s3cret-token";
const WAIT: Duration = Duration::from_secs(30);

/// The aggregator binary running with `extra_http` in `[http]`; killed on drop.
struct Aggregator {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Aggregator {
    fn start(dir: tempfile::TempDir, extra_http: &str) -> Aggregator {
        let d = dir.path();
        std::fs::write(d.join("read.token"), format!("{READ_TOKEN}\n")).unwrap();
        std::fs::write(d.join("write.token"), format!("{WRITE_TOKEN}\n")).unwrap();
        let port = free_port();
        let text = format!(
            "[aggregator]\nid = \"agg-http\"\n\n\
             [mqtt]\nembedded = true\nallow_anonymous = true\nlisten = \"127.0.0.1:{mqtt}\"\n\n\
             [database]\nurl = \"sqlite://{db}\"\n\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n{extra_http}\n\
             [[http.token]]\nname = \"viewer\"\ntoken_file = \"{d}/read.token\"\nscope = \"read\"\n\n\
             [[http.token]]\nname = \"quality\"\ntoken_file = \"{d}/write.token\"\nscope = \"write\"\n",
            mqtt = free_port(),
            db = d.join("agg.db").display(),
            d = d.display(),
        );
        let cfg = d.join("agg.toml");
        std::fs::write(&cfg, text).unwrap();
        let log = d.join("agg.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_threadline-aggregator"))
            .arg("run")
            .arg("--config")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Aggregator {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in with `token`; the `Set-Cookie` value and the `Location`.
async fn sign_in(agg: &Aggregator, token: &str, next: &str) -> (String, String) {
    let r = client()
        .post(agg.url("/ui/sign-in"))
        .form(&[("token", token), ("next", next)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let location = r.headers()[LOCATION].to_str().unwrap().to_owned();
    (cookie, location)
}

/// `name=value` of a `Set-Cookie` header, as a browser would send it back.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_signs_in_with_a_token_and_cookie_writes_must_be_same_origin() {
    let agg = Aggregator::start(tempfile::tempdir().unwrap(), "");
    let http = client();
    eventually("the HTTP API", WAIT, || async {
        http.get(agg.url("/healthz")).send().await.ok()
    })
    .await;

    // Not signed in: a page shows the sign-in form (returning to the page), the API says 401.
    let r = http
        .get(agg.url("/ui/dashboard?line=L1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("action=\"/ui/sign-in\"")
            && page.contains("name=\"token\"")
            && page.contains("name=\"next\" value=\"/ui/dashboard?line=L1\""),
        "{page}"
    );
    let r = http.get(agg.url("/api/v1/holds")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The sign-in page and its stylesheet are reachable.
    for open in ["/ui/sign-in", "/ui/assets/app.css"] {
        let r = http.get(agg.url(open)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{open}");
    }

    // A wrong token: the form again, no cookie.
    let r = http
        .post(agg.url("/ui/sign-in"))
        .form(&[("token", "guess"), ("next", "/ui/dashboard")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(SET_COOKIE).is_none());
    assert!(r.text().await.unwrap().contains("not accepted"));
    // An off-site `next` is not followed.
    let (_, location) = sign_in(&agg, READ_TOKEN, "//evil.example/x").await;
    assert_eq!(location, "/");

    // The read token: a session cookie with an opaque id, HttpOnly, SameSite=Strict, no Secure
    // over plain HTTP, with an expiry.
    let (set_cookie, location) = sign_in(&agg, READ_TOKEN, "/ui/dashboard").await;
    assert_eq!(location, "/ui/dashboard");
    let pair = cookie_pair(&set_cookie);
    let id = pair.strip_prefix("tl_session=").unwrap();
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains(READ_TOKEN));
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set_cookie.contains(attr), "{attr} missing: {set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    let r = http
        .get(agg.url("/ui/dashboard"))
        .header(COOKIE, &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http
        .get(agg.url("/api/v1/holds"))
        .header(COOKIE, &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A made-up session id is nobody.
    let r = http
        .get(agg.url("/api/v1/holds"))
        .header(COOKIE, format!("tl_session={}", "ab".repeat(32)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A read session may not write, even from our own pages.
    let hold = json!({"kind": "lot", "id": "LOT-CSRF", "reason": "test", "by": "qa"});
    let r = http
        .post(agg.url("/api/v1/holds"))
        .header(COOKIE, &pair)
        .header(ORIGIN, agg.origin())
        .json(&hold)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // A write session: writes only from our own origin.
    let (w_cookie, _) = sign_in(&agg, WRITE_TOKEN, "/").await;
    let w = cookie_pair(&w_cookie);
    let post = |headers: Vec<(&'static str, String)>| {
        let mut req = http
            .post(agg.url("/api/v1/holds"))
            .header(COOKIE, &w)
            .json(&hold);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    for cross in [
        vec![],
        vec![("origin", "http://evil.example".to_owned())],
        vec![("sec-fetch-site", "cross-site".to_owned())],
        vec![
            ("sec-fetch-site", "same-site".to_owned()),
            ("origin", agg.origin()),
        ],
    ] {
        let r = post(cross.clone()).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{cross:?}");
        let body = r.text().await.unwrap();
        assert!(body.contains("cross-site request refused"), "{body}");
    }
    let holds = || async {
        http.get(agg.url("/api/v1/holds"))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert!(
        !holds().await.contains("LOT-CSRF"),
        "a refused write was made"
    );
    // Allowed requests reach the handler, which answers for the (unknown) lot: they got past
    // authentication and the CSRF check.
    let reached = |status: StatusCode, body: &str| {
        status == StatusCode::NOT_FOUND && body.contains("unknown lot")
    };
    let r = post(vec![("origin", agg.origin())]).await.unwrap();
    let (st, body) = (r.status(), r.text().await.unwrap());
    assert!(reached(st, &body), "{st} {body}");
    let r = post(vec![("sec-fetch-site", "same-origin".to_owned())])
        .await
        .unwrap();
    let (st, body) = (r.status(), r.text().await.unwrap());
    assert!(reached(st, &body), "{st} {body}");
    // Bearer requests need no Origin.
    let r = http
        .post(agg.url("/api/v1/holds"))
        .bearer_auth(WRITE_TOKEN)
        .json(&hold)
        .send()
        .await
        .unwrap();
    let (st, body) = (r.status(), r.text().await.unwrap());
    assert!(reached(st, &body), "{st} {body}");

    // Sign-out: cross-site refused; from our page the session ends and the cookie is deleted.
    let r = http
        .post(agg.url("/ui/sign-out"))
        .header(COOKIE, &w)
        .header(ORIGIN, "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = http
        .post(agg.url("/ui/sign-out"))
        .header(COOKIE, &w)
        .header(ORIGIN, agg.origin())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cleared = r.headers()[SET_COOKIE].to_str().unwrap();
    assert!(
        cleared.starts_with("tl_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let r = http
        .get(agg.url("/ui/dashboard"))
        .header(COOKIE, &w)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The other session is unaffected.
    let r = http
        .get(agg.url("/ui/dashboard"))
        .header(COOKIE, &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", agg.output());
}

/// A raw HTTP/1.1 request over TLS trusting `ca` only; the whole answer.
async fn https(port: u16, ca: &Path, request: &str) -> std::io::Result<String> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(request.as_bytes()).await?;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_configured_certificate_and_no_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    if !make_tls_certs(dir.path()) {
        skip_or_fail("openssl is not available to make test certificates");
        return;
    }
    let d = dir.path().to_owned();
    // A second CA the client may trust instead, to see an untrusted server refused.
    let other = tempfile::tempdir().unwrap();
    assert!(make_tls_certs(other.path()));
    let agg = Aggregator::start(
        dir,
        &format!(
            "tls_cert_file = \"{0}/server.pem\"\ntls_key_file = \"{0}/server.key\"\n",
            d.display()
        ),
    );
    let port = agg.port;
    let ca = d.join("ca.pem");
    let healthz =
        format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    let answer = eventually("the HTTPS API", WAIT, || async {
        https(port, &ca, &healthz)
            .await
            .ok()
            .filter(|a| !a.is_empty())
    })
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 "),
        "{answer}\n{}",
        agg.output()
    );
    // Signing in over TLS gives a `Secure` cookie.
    let form = format!("token={READ_TOKEN}&next=%2Fui%2Fdashboard");
    let answer = https(
        port,
        &ca,
        &format!(
            "POST /ui/sign-in HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    )
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    let set_cookie = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap();
    assert!(
        set_cookie.contains("; Secure") && set_cookie.contains("HttpOnly"),
        "{set_cookie}"
    );
    // Plain HTTP on the same port gets no HTTP answer.
    let plain = client().get(agg.url("/healthz")).send().await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    // A client trusting another CA refuses the server.
    assert!(
        https(port, &other.path().join("ca.pem"), &healthz)
            .await
            .is_err()
    );
    // The server still serves after those failed handshakes.
    let answer = https(port, &ca, &healthz).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
}

#[test]
fn a_missing_or_unmatched_tls_file_refuses_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = format!(
        "[mqtt]\nembedded = true\nallow_anonymous = true\n[database]\nurl = \"sqlite://{}/a.db\"\n[http]\n",
        d.display()
    );
    let check = |http: &str| {
        std::fs::write(d.join("a.toml"), format!("{base}{http}")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_threadline-aggregator"))
            .args(["check", "--config"])
            .arg(d.join("a.toml"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let said = check(&format!("tls_cert_file = \"{}/nope.pem\"\n", d.display()));
    assert!(
        said.contains("http.tls_cert_file: set tls_key_file too"),
        "{said}"
    );
    let said = check(&format!(
        "tls_cert_file = \"{0}/nope.pem\"\ntls_key_file = \"{0}/nope.key\"\n",
        d.display()
    ));
    assert!(
        said.contains("http.tls_cert_file: cannot read") && said.contains("nope.pem"),
        "{said}"
    );
}
