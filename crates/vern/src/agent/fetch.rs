//! `vern svid fetch`: a Workload API client for programs that read their
//! identity from files. It writes `svid.pem` (the SVID, then its
//! intermediates), `svid.key` (PKCS#8, mode 0600) and `bundle.pem` (the
//! trust domain's roots), each through a temporary file renamed into place,
//! so a reader never sees half a file; with `--watch` it rewrites them on
//! every message of the stream (a renewal, a bundle change).

use std::io::Write as _;
use std::path::Path;

use anyhow::{bail, Context as _};
use base64::Engine as _;
use zeroize::Zeroizing;

use super::proto::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use super::proto::{X509svidRequest, X509svidResponse};

/// Fetches this process's X.509-SVID from the agent at `socket` and
/// writes it to `dir`; with `watch`, keeps doing so until the stream ends.
pub(crate) async fn fetch(socket: &str, dir: &Path, watch: bool) -> anyhow::Result<()> {
    let mut client = connect(socket).await?;
    let mut req = tonic::Request::new(X509svidRequest {});
    req.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let mut stream = client
        .fetch_x509svid(req)
        .await
        .map_err(|s| anyhow::anyhow!("the agent refused: {} ({:?})", s.message(), s.code()))?
        .into_inner();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    loop {
        let msg = stream
            .message()
            .await
            .map_err(|s| anyhow::anyhow!("the agent refused: {} ({:?})", s.message(), s.code()))?;
        let Some(msg) = msg else {
            if watch {
                bail!("the agent closed the stream");
            }
            bail!("the agent sent no SVID");
        };
        let spiffe_id = write(dir, &msg)?;
        eprintln!("Wrote the X.509-SVID of {spiffe_id} to {}.", dir.display());
        if !watch {
            return Ok(());
        }
    }
}

/// A client of the Workload API on the Unix socket `socket` (a path, or
/// `unix:///path` as `SPIFFE_ENDPOINT_SOCKET` has it).
pub(crate) async fn connect(
    socket: &str,
) -> anyhow::Result<SpiffeWorkloadApiClient<tonic::transport::Channel>> {
    let path = socket.strip_prefix("unix://").unwrap_or(socket).to_owned();
    if path.is_empty() {
        bail!("the socket path is empty");
    }
    // The URI is required by the API but unused: the connector dials the
    // socket.
    let channel = tonic::transport::Endpoint::try_from("http://[::]:0")
        .context("cannot make the endpoint")?
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
        .with_context(|| format!("cannot connect to the agent at {socket}"))?;
    Ok(SpiffeWorkloadApiClient::new(channel))
}

/// Writes the first SVID of `msg`; returns its SPIFFE ID.
fn write(dir: &Path, msg: &X509svidResponse) -> anyhow::Result<String> {
    let Some(svid) = msg.svids.first() else {
        bail!("the agent sent no SVID");
    };
    let chain = split_der(&svid.x509_svid).context("the SVID's certificates do not parse")?;
    let roots = split_der(&svid.bundle).context("the bundle's certificates do not parse")?;
    let key = Zeroizing::new(pem("PRIVATE KEY", &[svid.x509_svid_key.as_slice()]));
    replace(
        dir,
        "svid.pem",
        pem("CERTIFICATE", &chain).as_bytes(),
        0o644,
    )?;
    replace(dir, "svid.key", key.as_bytes(), 0o600)?;
    replace(
        dir,
        "bundle.pem",
        pem("CERTIFICATE", &roots).as_bytes(),
        0o644,
    )?;
    Ok(svid.spiffe_id.clone())
}

/// Writes `name` in `dir` through a temporary file created with `mode`,
/// flushed to disk, then renamed over the old one.
fn replace(dir: &Path, name: &str, data: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name))
        .with_context(|| format!("cannot rename {} into place", tmp.display()))?;
    Ok(())
}

fn pem(label: &str, ders: &[&[u8]]) -> String {
    let mut out = String::new();
    for der in ders {
        out.push_str(&format!("-----BEGIN {label}-----\n"));
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
    }
    out
}

/// Splits concatenated DER values (the Workload API's certificate lists)
/// by their outer lengths.
fn split_der(mut bytes: &[u8]) -> anyhow::Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let first = *bytes.get(1).context("truncated DER")?;
        let (len, header) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                bail!("unsupported DER length");
            }
            let len_bytes = bytes.get(2..2 + n).context("truncated DER")?;
            let len = len_bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, 2 + n)
        };
        let end = header.checked_add(len).context("DER length overflows")?;
        let (one, rest) = (
            bytes.get(..end).context("truncated DER")?,
            bytes.get(end..).context("truncated DER")?,
        );
        out.push(one);
        bytes = rest;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::split_der;

    #[test]
    fn der_values_split_by_their_lengths() {
        let short = [0x30, 0x02, 0x01, 0x02];
        let mut long = vec![0x30, 0x81, 0x80];
        long.extend([7u8; 0x80]);
        let both = [short.as_slice(), long.as_slice()].concat();
        let parts = split_der(&both).unwrap();
        assert_eq!(parts, vec![short.as_slice(), long.as_slice()]);
        assert!(split_der(&[0x30, 0x05, 1]).is_err());
        assert!(split_der(&[0x30]).is_err());
    }
}
