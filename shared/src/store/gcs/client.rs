//! Building the `gcloud-storage` client: an emulator (`STORAGE_EMULATOR_HOST`) with anonymous
//! credentials, or Google Cloud Storage with Application Default Credentials (the metadata
//! server on Cloud Run, `gcloud auth application-default login` on a workstation).

use gcloud_storage::client::{Client, ClientConfig};

use super::json::JsonApi;
use crate::core::net::NetLimits;
use crate::store::{Location, StoreError};

/// A client for `location`, talking to `emulator` when it is set, and our own JSON-API calls on
/// the same HTTP client and token source. Every request it sends obeys `net`: a connect timeout,
/// and a stall timeout on the wait for the answer's headers and on each read of its body
/// (reqwest's read timeout, reset by every piece that arrives), so a frozen endpoint fails the
/// request (transient: retried per the store's settings) instead of hanging the run.
pub(super) async fn build(
    location: &Location,
    emulator: Option<&str>,
    net: &NetLimits,
) -> Result<(Client, JsonApi), StoreError> {
    // gcloud-storage's HTTP client is built without a TLS crypto provider (so no C crypto
    // library is compiled in); ring is installed process-wide here. A second install (another
    // store, the Pub/Sub client) finds it there and changes nothing.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http =
        reqwest_gcs::Client::builder().connect_timeout(net.connect).read_timeout(net.stall).build().map_err(|e| {
            StoreError::Other {
                location: location.to_string(),
                operation: "open",
                key: String::new(),
                message: format!("cannot build the HTTP client: {e}"),
            }
        })?;
    let mut config = match emulator {
        Some(host) => ClientConfig { storage_endpoint: emulator_endpoint(host), ..ClientConfig::default() }.anonymous(),
        None => ClientConfig::default().with_auth().await.map_err(|e| StoreError::PermissionDenied {
            location: location.to_string(),
            key: String::new(),
            message: format!(
                "no Google credentials ({e}); on Cloud Run attach a service account, locally run gcloud auth application-default login"
            ),
        })?,
    };
    // The client made here is shared by the crate and our own calls.
    let http = reqwest_middleware::ClientBuilder::new(http).build();
    config.http = Some(http.clone());
    // The provider hands out one shared token source (and its cache) on every call.
    let token = config.token_source_provider.as_ref().map(|p| p.token_source());
    let json = JsonApi::new(http, token, &config.storage_endpoint);
    Ok((Client::new(config), json))
}

/// `STORAGE_EMULATOR_HOST` as an endpoint: `host:port` gets `http://`, a trailing `/` goes (the
/// client appends `/storage/v1/…` itself).
fn emulator_endpoint(host: &str) -> String {
    let host = if host.starts_with("http") { host.to_owned() } else { format!("http://{host}") };
    host.trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_hosts_become_endpoints() {
        assert_eq!(emulator_endpoint("localhost:4443"), "http://localhost:4443");
        assert_eq!(emulator_endpoint("http://127.0.0.1:4443/"), "http://127.0.0.1:4443");
        assert_eq!(emulator_endpoint("https://gcs.test"), "https://gcs.test");
    }
}
