//! The remote_write wire format: `prometheus.WriteRequest`, protobuf and raw
//! (block-format) snappy, as far as the probe needs it.

/// `prometheus.WriteRequest` of remote_write 1.0 (only the fields the probe needs).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`: value and timestamp in milliseconds.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// A remote_write body: the protobuf encoding of `req`, compressed with raw
/// (block-format) snappy as the protocol requires.
pub fn encode_write_request(req: &WriteRequest) -> Vec<u8> {
    let proto = prost::Message::encode_to_vec(req);
    snap::raw::Encoder::new()
        .compress_vec(&proto)
        .expect("snappy compresses any in-memory buffer")
}
