//! Identifiers in exported events: GS1 Digital Link URIs when the id itself carries a GS1 key
//! (an SSCC, a GTIN with serial or lot, as an element string or a Digital Link), otherwise
//! HTTP URIs under `[epcis] id_base`.

use threadline_shared::ids::{parse_gs1, validate_sscc};

/// The canonical Digital Link host (what the GS1 event hash normalises every GS1 key to).
const DL: &str = "https://id.gs1.org";

/// Builds every URI an export writes; one per configured `id_base`.
#[derive(Debug, Clone)]
pub struct Ids {
    /// `id_base` without a trailing slash.
    base: String,
}

impl Ids {
    /// `id_base` must be an absolute `http(s)://` URI (checked by the config validation).
    pub fn new(id_base: &str) -> Ids {
        Ids {
            base: id_base.trim_end_matches('/').to_owned(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The namespace of Threadline's extension fields (`tl:` in the `@context`).
    pub fn vocabulary(&self) -> String {
        format!("{}/voc/", self.base)
    }

    fn local(&self, kind: &str, id: &str) -> String {
        format!("{}/{kind}/{}", self.base, encode(id))
    }

    /// A unit (serialised instance): `…/01/{gtin}/21/{serial}` or `{id_base}/unit/{serial}`.
    pub fn unit(&self, serial: &str) -> String {
        if let Ok(e) = parse_gs1(serial)
            && let (Some(gtin), Some(ser)) = (e.gtin(), e.serial())
        {
            return format!("{DL}/01/{gtin}/21/{}", encode(ser));
        }
        self.local("unit", serial)
    }

    /// A lot (a class of objects with a quantity): `…/01/{gtin}/10/{lot}` or
    /// `{id_base}/lot/{lot}`.
    pub fn lot(&self, lot: &str) -> String {
        if let Ok(e) = parse_gs1(lot)
            && let (Some(gtin), Some(l)) = (e.gtin(), e.lot())
        {
            return format!("{DL}/01/{gtin}/10/{}", encode(l));
        }
        self.local("lot", lot)
    }

    /// A case or pallet: `…/00/{sscc}` when its id is (or carries) an SSCC, else
    /// `{id_base}/container/{id}`.
    pub fn container(&self, id: &str) -> String {
        if id.len() == 18 && id.bytes().all(|b| b.is_ascii_digit()) && validate_sscc(id).is_ok() {
            return format!("{DL}/00/{id}");
        }
        if let Ok(e) = parse_gs1(id)
            && let Some(sscc) = e.sscc()
        {
            return format!("{DL}/00/{sscc}");
        }
        self.local("container", id)
    }

    /// An item named by a record's `{kind, id}` reference.
    pub fn item(&self, kind: threadline_shared::event::ItemKind, id: &str) -> String {
        use threadline_shared::event::ItemKind as K;
        match kind {
            K::Unit => self.unit(id),
            K::Lot => self.lot(id),
            K::Container => self.container(id),
            K::Shipment => self.shipment(id),
        }
    }

    pub fn shipment(&self, id: &str) -> String {
        self.local("shipment", id)
    }
    pub fn station(&self, id: &str) -> String {
        self.local("station", id)
    }
    pub fn party(&self, id: &str) -> String {
        self.local("party", id)
    }
    pub fn work_order(&self, id: &str) -> String {
        self.local("work-order", id)
    }
    pub fn parameter(&self, name: &str) -> String {
        self.local("parameter", name)
    }
    pub fn equipment(&self, id: &str) -> String {
        self.local("equipment", id)
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (so an id becomes one path
/// segment whatever it contains).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gs1_keys_become_digital_link_and_the_rest_goes_under_id_base() {
        let ids = Ids::new("https://plant.example.com/tl/");
        assert_eq!(
            ids.unit("(01)09506000134352(21)A/1"),
            "https://id.gs1.org/01/09506000134352/21/A%2F1"
        );
        assert_eq!(
            ids.unit("SN 0001"),
            "https://plant.example.com/tl/unit/SN%200001"
        );
        assert_eq!(
            ids.lot("https://id.gs1.org/01/09506000134352/10/L42"),
            "https://id.gs1.org/01/09506000134352/10/L42"
        );
        assert_eq!(
            ids.lot("STEEL-7"),
            "https://plant.example.com/tl/lot/STEEL-7"
        );
        assert_eq!(
            ids.container("106141411234567897"),
            "https://id.gs1.org/00/106141411234567897"
        );
        // 18 digits with a wrong check digit is not an SSCC.
        assert_eq!(
            ids.container("106141411234567890"),
            "https://plant.example.com/tl/container/106141411234567890"
        );
        assert_eq!(ids.vocabulary(), "https://plant.example.com/tl/voc/");
    }
}
