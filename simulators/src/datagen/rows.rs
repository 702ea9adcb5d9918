//! The rows the generator writes: one struct per table, its fields in the table's column order,
//! borrowing their text so that a row costs no allocation of its own. A column the generator
//! always leaves NULL has no field; [`Row::encode`] writes NULL for it.

/// The tables the generator fills, in foreign-key order: a table only references tables before
/// it, so flushing buffers in this order never writes a row before the rows it references.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
    Items,
    Edges,
    Operations,
    OperationParameters,
    OperationMaterials,
    QualityChecks,
    Readings,
}

impl Table {
    /// Every table, in foreign-key order.
    pub(super) const ALL: [Table; 7] = [
        Table::Items,
        Table::Edges,
        Table::Operations,
        Table::OperationParameters,
        Table::OperationMaterials,
        Table::QualityChecks,
        Table::Readings,
    ];

    /// Position in [`Table::ALL`] (the index of the table's buffer).
    pub(super) fn index(self) -> usize {
        self as usize
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Table::Items => "items",
            Table::Edges => "edges",
            Table::Operations => "operations",
            Table::OperationParameters => "operation_parameters",
            Table::OperationMaterials => "operation_materials",
            Table::QualityChecks => "quality_checks",
            Table::Readings => "readings",
        }
    }

    /// The columns the generator writes, in the order [`Row::encode`] writes them.
    pub(super) fn columns(self) -> &'static [&'static str] {
        match self {
            Table::Items => Item::COLUMNS,
            Table::Edges => Edge::COLUMNS,
            Table::Operations => Operation::COLUMNS,
            Table::OperationParameters => Parameter::COLUMNS,
            Table::OperationMaterials => Material::COLUMNS,
            Table::QualityChecks => QualityCheck::COLUMNS,
            Table::Readings => Reading::COLUMNS,
        }
    }
}

/// Where a row's values go: the COPY text format or an SQL `VALUES` tuple (see `sink`).
pub(super) trait Fields {
    fn int(&mut self, v: i64);
    fn float(&mut self, v: f64);
    fn text(&mut self, v: &str);
    fn flag(&mut self, v: bool);
    fn null(&mut self);

    fn opt_text(&mut self, v: Option<&str>) {
        match v {
            Some(s) => self.text(s),
            None => self.null(),
        }
    }

    fn opt_float(&mut self, v: Option<f64>) {
        match v {
            Some(x) => self.float(x),
            None => self.null(),
        }
    }
}

/// A row of one table.
pub(super) trait Row {
    const TABLE: Table;
    const COLUMNS: &'static [&'static str];
    /// Writes every column of [`Row::COLUMNS`], in that order.
    fn encode(&self, f: &mut impl Fields);
}

/// An item: a unit, a lot, a container or a shipment. Every generated item is real (no
/// placeholder); which optional columns are set depends on the kind.
#[derive(Debug, Clone, Copy)]
pub(super) struct Item<'a> {
    pub(super) id: i64,
    pub(super) kind: &'a str,
    pub(super) ext_id: &'a str,
    pub(super) part: Option<&'a str>,
    pub(super) supplier: Option<&'a str>,
    pub(super) supplier_batch: Option<&'a str>,
    pub(super) qty: Option<f64>,
    pub(super) work_order: Option<&'a str>,
    pub(super) line: Option<&'a str>,
    pub(super) level: Option<&'a str>,
    pub(super) customer: Option<&'a str>,
    pub(super) shipped_at: Option<&'a str>,
    pub(super) first_seen_at: Option<&'a str>,
}

impl<'a> Item<'a> {
    /// An item of `kind` with every optional column NULL.
    pub(super) fn new(id: i64, kind: &'a str, ext_id: &'a str) -> Item<'a> {
        Item {
            id,
            kind,
            ext_id,
            part: None,
            supplier: None,
            supplier_batch: None,
            qty: None,
            work_order: None,
            line: None,
            level: None,
            customer: None,
            shipped_at: None,
            first_seen_at: None,
        }
    }
}

impl Row for Item<'_> {
    const TABLE: Table = Table::Items;
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "kind",
        "ext_id",
        "part",
        "placeholder",
        "supplier",
        "supplier_batch",
        "qty",
        "work_order",
        "line",
        "level",
        "customer",
        "shipped_at",
        "first_seen_at",
    ];

    fn encode(&self, f: &mut impl Fields) {
        f.int(self.id);
        f.text(self.kind);
        f.text(self.ext_id);
        f.opt_text(self.part);
        f.flag(false); // placeholder
        f.opt_text(self.supplier);
        f.opt_text(self.supplier_batch);
        f.opt_float(self.qty);
        f.opt_text(self.work_order);
        f.opt_text(self.line);
        f.opt_text(self.level);
        f.opt_text(self.customer);
        f.opt_text(self.shipped_at);
        f.opt_text(self.first_seen_at);
    }
}

/// A genealogy edge; closed (`valid_to`, `closed_reason`) when the child was taken out again.
#[derive(Debug, Clone, Copy)]
pub(super) struct Edge<'a> {
    pub(super) id: i64,
    pub(super) parent_id: i64,
    pub(super) child_id: i64,
    pub(super) relation: &'a str,
    pub(super) qty: Option<f64>,
    pub(super) station: &'a str,
    pub(super) valid_from: &'a str,
    pub(super) valid_to: Option<&'a str>,
    pub(super) closed_reason: Option<&'a str>,
}

impl Row for Edge<'_> {
    const TABLE: Table = Table::Edges;
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "parent_id",
        "child_id",
        "relation",
        "qty",
        "station",
        "valid_from",
        "valid_to",
        "closed_reason",
    ];

    fn encode(&self, f: &mut impl Fields) {
        f.int(self.id);
        f.int(self.parent_id);
        f.int(self.child_id);
        f.text(self.relation);
        f.opt_float(self.qty);
        f.text(self.station);
        f.text(self.valid_from);
        f.opt_text(self.valid_to);
        f.opt_text(self.closed_reason);
    }
}

/// One operation on a unit; `environment` is its JSON array of hall values.
#[derive(Debug, Clone, Copy)]
pub(super) struct Operation<'a> {
    pub(super) id: i64,
    pub(super) unit_id: i64,
    pub(super) station: &'a str,
    pub(super) operation: &'a str,
    pub(super) equipment: &'a str,
    pub(super) operator: &'a str,
    pub(super) recipe: &'a str,
    pub(super) started_at: &'a str,
    pub(super) completed_at: &'a str,
    pub(super) result: &'a str,
    pub(super) defect_code: Option<&'a str>,
    pub(super) out_of_spec: bool,
    pub(super) environment: &'a str,
    pub(super) gateway: &'a str,
}

impl Row for Operation<'_> {
    const TABLE: Table = Table::Operations;
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "unit_id",
        "station",
        "operation",
        "equipment",
        "operator",
        "recipe",
        "started_at",
        "completed_at",
        "result",
        "defect_code",
        "out_of_spec",
        "environment",
        "gateway",
    ];

    fn encode(&self, f: &mut impl Fields) {
        f.int(self.id);
        f.int(self.unit_id);
        f.text(self.station);
        f.text(self.operation);
        f.text(self.equipment);
        f.text(self.operator);
        f.text(self.recipe);
        f.text(self.started_at);
        f.text(self.completed_at);
        f.text(self.result);
        f.opt_text(self.defect_code);
        f.flag(self.out_of_spec);
        f.text(self.environment);
        f.text(self.gateway);
    }
}

/// A numeric process parameter of an operation, with its limits.
#[derive(Debug, Clone, Copy)]
pub(super) struct Parameter<'a> {
    pub(super) operation_id: i64,
    pub(super) name: &'a str,
    pub(super) value_num: f64,
    pub(super) unit: &'a str,
    pub(super) lsl: f64,
    pub(super) usl: f64,
    pub(super) in_spec: bool,
}

impl Row for Parameter<'_> {
    const TABLE: Table = Table::OperationParameters;
    const COLUMNS: &'static [&'static str] = &[
        "operation_id",
        "name",
        "value_num",
        "value_text",
        "unit",
        "lsl",
        "usl",
        "in_spec",
    ];

    fn encode(&self, f: &mut impl Fields) {
        f.int(self.operation_id);
        f.text(self.name);
        f.float(self.value_num);
        f.null(); // value_text
        f.text(self.unit);
        f.float(self.lsl);
        f.float(self.usl);
        f.flag(self.in_spec);
    }
}

/// A lot consumed by an operation.
#[derive(Debug, Clone, Copy)]
pub(super) struct Material {
    pub(super) operation_id: i64,
    pub(super) lot_id: i64,
    pub(super) qty: f64,
}

impl Row for Material {
    const TABLE: Table = Table::OperationMaterials;
    const COLUMNS: &'static [&'static str] = &["operation_id", "lot_id", "qty"];

    fn encode(&self, f: &mut impl Fields) {
        f.int(self.operation_id);
        f.int(self.lot_id);
        f.float(self.qty);
    }
}

/// A numeric quality check of a unit.
#[derive(Debug, Clone, Copy)]
pub(super) struct QualityCheck<'a> {
    pub(super) id: i64,
    pub(super) unit_id: i64,
    pub(super) characteristic: &'a str,
    pub(super) value_num: f64,
    pub(super) unit_of_measure: &'a str,
    pub(super) lsl: f64,
    pub(super) usl: f64,
    pub(super) result: &'a str,
    pub(super) station: &'a str,
    pub(super) operator: &'a str,
    pub(super) checked_at: &'a str,
}

impl Row for QualityCheck<'_> {
    const TABLE: Table = Table::QualityChecks;
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "unit_id",
        "characteristic",
        "value_num",
        "value_text",
        "unit_of_measure",
        "lsl",
        "usl",
        "result",
        "station",
        "operator",
        "checked_at",
    ];

    fn encode(&self, f: &mut impl Fields) {
        f.int(self.id);
        f.int(self.unit_id);
        f.text(self.characteristic);
        f.float(self.value_num);
        f.null(); // value_text
        f.text(self.unit_of_measure);
        f.float(self.lsl);
        f.float(self.usl);
        f.text(self.result);
        f.text(self.station);
        f.text(self.operator);
        f.text(self.checked_at);
    }
}

/// A good numeric reading of one tag.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reading<'a> {
    pub(super) gateway: &'a str,
    pub(super) epoch: &'a str,
    pub(super) seq: i64,
    pub(super) ts: &'a str,
    pub(super) device: &'a str,
    pub(super) tag: &'a str,
    pub(super) value_num: f64,
    pub(super) unit: &'a str,
    pub(super) quality: &'a str,
}

impl Row for Reading<'_> {
    const TABLE: Table = Table::Readings;
    const COLUMNS: &'static [&'static str] = &[
        "gateway",
        "epoch",
        "seq",
        "ts",
        "device",
        "tag",
        "value_num",
        "value_text",
        "unit",
        "quality",
        "error",
    ];

    fn encode(&self, f: &mut impl Fields) {
        f.text(self.gateway);
        f.text(self.epoch);
        f.int(self.seq);
        f.text(self.ts);
        f.text(self.device);
        f.text(self.tag);
        f.float(self.value_num);
        f.null(); // value_text
        f.text(self.unit);
        f.text(self.quality);
        f.null(); // error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the values a row writes.
    #[derive(Default)]
    struct Count(usize);

    impl Fields for Count {
        fn int(&mut self, _: i64) {
            self.0 += 1;
        }
        fn float(&mut self, _: f64) {
            self.0 += 1;
        }
        fn text(&mut self, _: &str) {
            self.0 += 1;
        }
        fn flag(&mut self, _: bool) {
            self.0 += 1;
        }
        fn null(&mut self) {
            self.0 += 1;
        }
    }

    fn written<R: Row>(row: &R) -> usize {
        let mut c = Count::default();
        row.encode(&mut c);
        c.0
    }

    #[test]
    fn every_row_writes_one_value_per_column() {
        let item = Item::new(1, "unit", "SN1");
        let edge = Edge {
            id: 1,
            parent_id: 1,
            child_id: 2,
            relation: "packed",
            qty: None,
            station: "PK1",
            valid_from: "t",
            valid_to: None,
            closed_reason: None,
        };
        let op = Operation {
            id: 1,
            unit_id: 1,
            station: "ST10",
            operation: "OP10",
            equipment: "PRESS-1",
            operator: "OP0001",
            recipe: "R1",
            started_at: "t",
            completed_at: "t",
            result: "pass",
            defect_code: None,
            out_of_spec: false,
            environment: "[]",
            gateway: "gw",
        };
        let param = Parameter {
            operation_id: 1,
            name: "p",
            value_num: 1.0,
            unit: "bar",
            lsl: 0.0,
            usl: 2.0,
            in_spec: true,
        };
        let mat = Material {
            operation_id: 1,
            lot_id: 2,
            qty: 1.0,
        };
        let qc = QualityCheck {
            id: 1,
            unit_id: 1,
            characteristic: "c",
            value_num: 1.0,
            unit_of_measure: "mm",
            lsl: 0.0,
            usl: 2.0,
            result: "pass",
            station: "QC1",
            operator: "OP0100",
            checked_at: "t",
        };
        let reading = Reading {
            gateway: "gw",
            epoch: "e",
            seq: 1,
            ts: "t",
            device: "d",
            tag: "t",
            value_num: 1.0,
            unit: "bar",
            quality: "good",
        };
        let counts = [
            (Table::Items, written(&item)),
            (Table::Edges, written(&edge)),
            (Table::Operations, written(&op)),
            (Table::OperationParameters, written(&param)),
            (Table::OperationMaterials, written(&mat)),
            (Table::QualityChecks, written(&qc)),
            (Table::Readings, written(&reading)),
        ];
        for (table, n) in counts {
            assert_eq!(n, table.columns().len(), "{}", table.name());
        }
    }

    #[test]
    fn tables_are_listed_in_index_order() {
        for (i, t) in Table::ALL.iter().enumerate() {
            assert_eq!(t.index(), i, "{}", t.name());
        }
    }
}
