//! TLS for every HTTP client of the project: rustls with the `ring` crypto provider. The SDK's
//! client selects it itself (`pixpress_aws::https_client`); `reqwest`, built without a
//! provider of its own, takes the process's default, which [`install_crypto_provider`] sets.

/// Makes `ring` the process's rustls crypto provider; call it before building a `reqwest`
/// client (which panics without one). Safe to call any number of times: the first provider
/// installed stays.
pub fn install_crypto_provider() {
    // `Err` means a provider is installed already, which is all that is needed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
