//! MQTT delivery with end-to-end acknowledgement.
