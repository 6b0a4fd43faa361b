//! One TLS crypto provider for the whole process. The CQL driver's rustls
//! support brings rustls with its default provider (aws-lc-rs) while kube's
//! client is built for ring; with both compiled in, rustls cannot choose a
//! process default and panics the first time a client (kube's, for the
//! ingester's Lease) asks for one. Every binary and test process that may make
//! TLS clients installs ring first; the CQL store names its provider itself.

/// Installs ring as the process's rustls provider (a no-op if one is set).
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
