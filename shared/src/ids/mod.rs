//! Identifiers on labels and tags: GS1 element strings and Digital Link URIs, GTIN / SSCC check
//! digits, EPC SGTIN-96 / SSCC-96 binary encodings.
