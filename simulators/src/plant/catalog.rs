//! What the demo plant is made of: parts, devices, suppliers, staffed stations, machines and
//! the statistical models of their process parameters. Constant data only; what the plant does
//! with it is in [`super::model`].

/// Part numbers of the demo plant.
pub const PART_FINAL: &str = "P-DRIVE-200";
pub const PART_SUB: &str = "P-HUB-100";
pub const PART_BEARING: &str = "P-6202";
pub const PART_HOUSING: &str = "P-HSG-10";
pub const PART_SCREW: &str = "P-SCR-M5";

/// Device ids of the demo plant (Modbus TCP simulators).
pub const DEV_LINE1: &str = "l1-plc";
pub const DEV_LINE2: &str = "l2-plc";
pub const DEV_HALL: &str = "hall-env";

/// Control codes that close the open case / pallet / shipment (printed on the packing tables).
pub const CLOSE_CASE: &str = "CLOSE-CASE";
pub const CLOSE_PALLET: &str = "CLOSE-PALLET";
pub const CLOSE_SHIPMENT: &str = "CLOSE-SHIPMENT";

/// Customers the shipments go to.
pub const CUSTOMERS: [&str; 3] = ["ACME-AUTOMOTIVE", "NORDWERK-AG", "SAKURA-MOTORS"];

/// A supplier of a part.
pub(super) struct Supplier {
    pub(super) part: &'static str,
    pub(super) name: &'static str,
    pub(super) gtin_base: &'static str,
    pub(super) tag: &'static str,
    /// Received at this dock (scanner id, station id).
    pub(super) dock: (&'static str, &'static str),
}

pub(super) const SUPPLIERS: [Supplier; 3] = [
    Supplier {
        part: PART_BEARING,
        name: "KUGELLAGER-GMBH",
        gtin_base: "0401234500001",
        tag: "BRG",
        dock: ("rcv-brg-scanner", "RCV-BRG"),
    },
    Supplier {
        part: PART_HOUSING,
        name: "GUSSWERK-NORD",
        gtin_base: "0401234500002",
        tag: "HSG",
        dock: ("rcv-hsg-scanner", "RCV-HSG"),
    },
    Supplier {
        part: PART_SCREW,
        name: "SCHRAUBEN-SUED",
        gtin_base: "0401234500003",
        tag: "SCR",
        dock: ("rcv-scr-scanner", "RCV-SCR"),
    },
];

/// A station with an operator.
pub(super) struct Staffed {
    pub(super) station: &'static str,
    pub(super) scanner: &'static str,
}

pub(super) const LINE1_STAFF: [Staffed; 2] = [
    Staffed {
        station: "ST10",
        scanner: "st10-scanner",
    },
    Staffed {
        station: "ST20",
        scanner: "st20-scanner",
    },
];
pub(super) const LINE2_STAFF: [Staffed; 2] = [
    Staffed {
        station: "ST110",
        scanner: "st110-scanner",
    },
    Staffed {
        station: "ST120",
        scanner: "st120-scanner",
    },
];

/// Operations of a station kind with PLC tags.
pub(super) struct Machine {
    pub(super) station: &'static str,
    pub(super) operation: &'static str,
    pub(super) equipment: &'static str,
    pub(super) device: &'static str,
    /// Tag name prefix, e.g. `st10`.
    pub(super) prefix: &'static str,
    pub(super) program: u16,
    pub(super) scanner: &'static str,
}

pub(super) const ST10: Machine = Machine {
    station: "ST10",
    operation: "OP10 press-fit bearing",
    equipment: "PRESS-1",
    device: DEV_LINE1,
    prefix: "st10",
    program: 3,
    scanner: "st10-scanner",
};
pub(super) const ST20: Machine = Machine {
    station: "ST20",
    operation: "OP20 inspect run-out",
    equipment: "VISION-1",
    device: DEV_LINE1,
    prefix: "st20",
    program: 7,
    scanner: "st20-scanner",
};
pub(super) const ST110: Machine = Machine {
    station: "ST110",
    operation: "OP110 assemble drive",
    equipment: "SCREWDRIVER-2",
    device: DEV_LINE2,
    prefix: "st110",
    program: 12,
    scanner: "st110-scanner",
};
pub(super) const ST120: Machine = Machine {
    station: "ST120",
    operation: "OP120 end-of-line test",
    equipment: "EOL-TESTER-2",
    device: DEV_LINE2,
    prefix: "st120",
    program: 21,
    scanner: "st120-scanner",
};

/// A parameter's statistical model.
pub(super) struct ParamModel {
    pub(super) tag: &'static str,
    pub(super) unit: &'static str,
    pub(super) mean: f64,
    pub(super) sd: f64,
    pub(super) lsl: Option<f64>,
    pub(super) usl: Option<f64>,
    /// How the register stores it: `None` = f32, `Some(scale)` = 16-bit integer × scale.
    pub(super) scale: Option<f64>,
}

pub(super) const ST10_PARAMS: [ParamModel; 2] = [
    ParamModel {
        tag: "st10.pressure",
        unit: "bar",
        mean: 200.0,
        sd: 5.0,
        lsl: Some(180.0),
        usl: Some(220.0),
        scale: None,
    },
    ParamModel {
        tag: "st10.force_peak",
        unit: "kN",
        mean: 10.0,
        sd: 0.6,
        lsl: None,
        usl: Some(12.5),
        scale: None,
    },
];
pub(super) const ST20_PARAMS: [ParamModel; 1] = [ParamModel {
    tag: "st20.runout",
    unit: "mm",
    mean: 0.02,
    sd: 0.006,
    lsl: None,
    usl: Some(0.05),
    scale: None,
}];
pub(super) const ST110_PARAMS: [ParamModel; 2] = [
    ParamModel {
        tag: "st110.torque",
        unit: "Nm",
        mean: 5.0,
        sd: 0.12,
        lsl: Some(4.5),
        usl: Some(5.5),
        scale: None,
    },
    ParamModel {
        tag: "st110.angle",
        unit: "deg",
        mean: 720.0,
        sd: 15.0,
        lsl: Some(650.0),
        usl: Some(800.0),
        scale: None,
    },
];
pub(super) const ST120_PARAMS: [ParamModel; 2] = [
    ParamModel {
        tag: "st120.leak_rate",
        unit: "ml/min",
        mean: 1.0,
        sd: 0.25,
        lsl: None,
        usl: Some(2.0),
        scale: None,
    },
    ParamModel {
        tag: "st120.noise",
        unit: "dB",
        mean: 52.0,
        sd: 2.0,
        lsl: None,
        usl: Some(60.0),
        scale: Some(0.1),
    },
];
