//! Transport-level behaviour: `wss://` and `https://` with a configured certificate,
//! and QUIC's own bad input (wrong ALPN, a handshake that never finishes, a second
//! stream, an oversized length prefix, a reset mid-frame, the connection limit).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use courier::client::{http_client, Client, ClientError, ClientTrust, ConnectOptions};
use courier::pb::{self, frame::Kind};
use courier::protocol::framing;
use courier::protocol::{codec, codes};
use courier::tls::QUIC_ALPN;
use quinn::crypto::rustls::QuicClientConfig;

use crate::common::*;

/// A CA and a certificate for `localhost`/`127.0.0.1` it signed, written as PEM
/// files: (ca file, cert file, key file).
fn issue_certificate(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, leaf.pem()).unwrap();
    std::fs::write(&paths.2, leaf_key.serialize_pem()).unwrap();
    paths
}

#[tokio::test]
async fn wss_and_https_with_a_configured_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = issue_certificate(certs.path());
    let s = TestServer::start_with(|c| {
        c.tls_cert_file = cert.clone();
        c.tls_key_file = key.clone();
        c.tls_handshake_timeout_secs = 1;
    })
    .await;
    assert!(s.http().starts_with("https://") && s.ws().starts_with("wss://"));

    // Trusting the CA: the token over HTTPS, then messages over WSS and QUIC.
    let trust = ClientTrust::CaFile(ca);
    let http = http_client(&trust).unwrap();
    let token = |account: &'static str| {
        let (http, s) = (&http, &s);
        async move {
            courier::client::fetch_token_with(
                http,
                &s.http(),
                s.app.app_id,
                &s.app.app_key,
                &s.app.app_secret,
                account,
            )
            .await
            .unwrap()
            .token
        }
    };
    let options = ConnectOptions::new(&trust).unwrap();
    let quic = s.server.as_ref().unwrap().quic_url().unwrap();
    let mut alice = Client::connect_with(&s.ws(), &options, &token("alice").await, "web")
        .await
        .unwrap();
    let mut bob = Client::connect_with(&quic, &options, &token("bob").await, "phone")
        .await
        .unwrap();
    read_backlog(&mut alice).await;
    read_backlog(&mut bob).await;
    let ack = send_acked(&mut alice, "w-1", "bob", "over wss").await;
    let d = next_deliver(&mut bob).await;
    assert_eq!((d.sequence, text(&d).as_str()), (ack.sequence, "over wss"));

    // Plaintext HTTP to the TLS port: the handshake fails and the socket is closed.
    let addr = s.http().trim_start_matches("https://").to_owned();
    let answer = raw_exchange(&addr, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "plaintext must not be served"
    );

    // The web PKI does not know this CA: refused by the client.
    let err = Client::open(&s.ws()).await.unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // A silent socket on the TLS port is closed after the handshake timeout.
    let silent = raw_exchange(&addr, b"").await;
    assert!(silent.is_empty());

    // The others still talk.
    let ack = send_acked(&mut bob, "q-1", "alice", "still there").await;
    assert_eq!(next_deliver(&mut alice).await.sequence, ack.sequence);
}

#[tokio::test]
async fn a_wrong_pinned_fingerprint_is_refused_by_the_client() {
    let s = TestServer::on(Transport::Quic).await;
    let mut fp = s.server.as_ref().unwrap().cert_fingerprint.unwrap();
    fp[0] ^= 1;
    let options = ConnectOptions::new(&ClientTrust::Pinned(fp)).unwrap();
    let err = Client::open_with(&s.url(), &options).await.unwrap_err();
    assert!(err.to_string().contains("fingerprint"), "{err}");
}

fn quic_addr(s: &TestServer) -> SocketAddr {
    s.server.as_ref().unwrap().quic_addr.unwrap()
}

fn open_slots(s: &TestServer) -> usize {
    s.server.as_ref().unwrap().state.slots.open()
}

/// Waits (bounded by [`WAIT`]) until the server holds at most `n` connection slots.
async fn until_open_slots(s: &TestServer, n: usize) {
    let slots = &s.server.as_ref().unwrap().state.slots;
    tokio::time::timeout(WAIT, slots.until_free(slots.max() - n))
        .await
        .unwrap_or_else(|_| panic!("server holds {} slots, expected {n}", open_slots(s)));
}

/// A raw quinn connection to the test server offering `alpn`.
async fn raw_quic(
    s: &TestServer,
    alpn: &[u8],
) -> (
    quinn::Endpoint,
    Result<quinn::Connection, quinn::ConnectionError>,
) {
    let fp = s.server.as_ref().unwrap().cert_fingerprint.unwrap();
    let tls = ClientTrust::Pinned(fp).client_config(&[alpn]).unwrap();
    let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let connecting = endpoint
        .connect_with(config, quic_addr(s), "localhost")
        .unwrap();
    (endpoint, connecting.await)
}

/// One frame with its length prefix.
fn framed(kind: Kind) -> Vec<u8> {
    let frame = codec::encode(kind);
    let mut out = framing::prefix(&frame).to_vec();
    out.extend_from_slice(&frame);
    out
}

/// The receiving side of a raw session stream, split into frames (a frame may
/// arrive across reads, and one read may carry several).
struct RawFrames {
    recv: quinn::RecvStream,
    decoder: framing::FrameDecoder,
}

impl RawFrames {
    fn new(recv: quinn::RecvStream) -> Self {
        RawFrames {
            recv,
            decoder: framing::FrameDecoder::new(1 << 20),
        }
    }

    /// The next frame; `None` at the end of the stream.
    async fn next(&mut self) -> Option<pb::frame::Kind> {
        loop {
            if let Some(frame) = self.decoder.next_frame().unwrap() {
                return codec::decode(&frame, &Default::default()).ok();
            }
            let chunk = tokio::time::timeout(WAIT, self.recv.read_chunk(1 << 16, true))
                .await
                .expect("no frame in time");
            match chunk {
                Ok(Some(chunk)) => self.decoder.push(&chunk.bytes),
                _ => return None,
            }
        }
    }
}

/// A raw QUIC connection logged in as `account` on its session stream.
async fn raw_login(
    s: &TestServer,
    account: &str,
) -> (
    quinn::Endpoint,
    quinn::Connection,
    quinn::SendStream,
    RawFrames,
) {
    let token = s.token(account).await;
    let (endpoint, connection) = raw_quic(s, QUIC_ALPN).await;
    let connection = connection.unwrap();
    let (mut send, recv) = connection.open_bi().await.unwrap();
    let mut recv = RawFrames::new(recv);
    send.write_all(&framed(Kind::Login(pb::Login {
        protocol_version: 1,
        token,
        resource: "phone".into(),
    })))
    .await
    .unwrap();
    match recv.next().await {
        Some(Kind::LoginResult(r)) => assert_eq!(r.code, 200),
        other => panic!("expected LoginResult, got {other:?}"),
    }
    (endpoint, connection, send, recv)
}

async fn still_serving_quic(s: &TestServer) {
    let (mut x, _) = s.connect_synced("xavier", "phone").await;
    let (mut y, _) = s.connect_synced("yolanda", "phone").await;
    let ack = send_acked(&mut x, "ok", "yolanda", "fine").await;
    assert_eq!(next_deliver(&mut y).await.sequence, ack.sequence);
}

#[tokio::test]
async fn quic_with_a_wrong_alpn_is_refused() {
    let s = TestServer::on(Transport::Quic).await;
    let (_endpoint, refused) = raw_quic(&s, b"h3").await;
    let err = refused.expect_err("a foreign ALPN must not connect");
    assert!(
        err.to_string()
            .to_lowercase()
            .contains("application protocol")
            || err.to_string().contains("120"),
        "{err}"
    );
    still_serving_quic(&s).await;
}

/// Accepts any certificate, but only once the test lets it: the client's side of
/// the handshake stalls in between.
#[derive(Debug)]
struct StalledVerifier {
    /// Told when the server's certificate arrived (the server holds a slot by then).
    started: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl rustls::client::danger::ServerCertVerifier for StalledVerifier {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if let Some(started) = self.started.lock().unwrap().take() {
            let _ = started.send(());
        }
        let _ = self.release.lock().unwrap().recv_timeout(WAIT);
        Err(rustls::Error::General("stalled on purpose".into()))
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("unused".into()))
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("unused".into()))
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[tokio::test]
async fn a_quic_handshake_that_never_finishes_gives_its_slot_back() {
    // 3 s: the window in which the test checks the slot is taken, even on a loaded machine.
    let s = TestServer::on_with(Transport::Quic, |c| c.tls_handshake_timeout_secs = 3).await;
    let (release, stalled) = std::sync::mpsc::channel();
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(StalledVerifier {
        started: std::sync::Mutex::new(Some(started_tx)),
        release: std::sync::Mutex::new(stalled),
    }))
    .with_no_client_auth();
    tls.alpn_protocols = vec![QUIC_ALPN.to_vec()];
    let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
    let addr = quic_addr(&s);
    // The client runs on its own thread: its stalled verifier blocks that thread.
    let client = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            let result = endpoint
                .connect_with(config, addr, "localhost")
                .unwrap()
                .await;
            assert!(result.is_err(), "the handshake must not succeed");
        })
    });
    tokio::time::timeout(WAIT, started)
        .await
        .expect("the server answered the handshake")
        .unwrap();
    assert_eq!(open_slots(&s), 1, "the pending handshake holds a slot");
    // The server gives up after tls_handshake_timeout_secs and frees the slot.
    until_open_slots(&s, 0).await;
    release.send(()).unwrap();
    client.join().unwrap();
    still_serving_quic(&s).await;
}

#[tokio::test]
async fn a_second_quic_stream_is_refused_and_the_session_goes_on() {
    let s = TestServer::on(Transport::Quic).await;
    let (_endpoint, connection, mut send, mut recv) = raw_login(&s, "mallory").await;

    let (mut extra_send, mut extra_recv) = connection.open_bi().await.unwrap();
    extra_send
        .write_all(&framed(Kind::Ping(pb::Ping { nonce: 1 })))
        .await
        .unwrap();
    let refused = tokio::time::timeout(WAIT, extra_recv.read_chunk(16, true))
        .await
        .expect("the extra stream must be answered");
    match refused {
        Err(quinn::ReadError::Reset(code)) => {
            assert_eq!(
                code.into_inner(),
                courier::transport::quic::STREAM_REFUSED as u64
            )
        }
        other => panic!("expected a reset, got {other:?}"),
    }

    // The session stream still works.
    send.write_all(&framed(Kind::Ping(pb::Ping { nonce: 7 })))
        .await
        .unwrap();
    loop {
        match recv.next().await {
            Some(Kind::Pong(p)) => {
                assert_eq!(p.nonce, 7);
                break;
            }
            Some(_) => continue,
            None => panic!("session closed"),
        }
    }

    // A peer that keeps opening streams gets the connection closed.
    drop((extra_send, extra_recv));
    for _ in 0..64 {
        let Ok(Ok((mut s, mut r))) = tokio::time::timeout(WAIT, connection.open_bi()).await else {
            break;
        };
        if s.write_all(b"x").await.is_err() {
            break;
        }
        let _ = s.finish();
        // Ends with the server's reset; then both sides of the stream are done.
        let _ = tokio::time::timeout(WAIT, r.read_to_end(16)).await;
    }
    let closed = tokio::time::timeout(WAIT, connection.closed())
        .await
        .expect("closed after too many extra streams");
    match closed {
        quinn::ConnectionError::ApplicationClosed(c) => assert_eq!(
            c.error_code.into_inner(),
            courier::transport::quic::STREAM_REFUSED as u64
        ),
        other => panic!("expected an application close, got {other:?}"),
    }
}

#[tokio::test]
async fn shutdown_closes_quic_connections_that_have_no_session_yet() {
    let mut s = TestServer::on(Transport::Quic).await;
    s.pin();
    let mut c = s.open().await;
    s.server.take().unwrap().shutdown().await.unwrap();
    // Closed at once with the normal code, not after the login timeout with 0x11.
    let end = tokio::time::timeout(WAIT, c.next_event()).await.unwrap();
    assert!(matches!(end, Ok(None)), "{end:?}");
}

#[tokio::test]
async fn an_oversized_length_prefix_is_refused_before_its_body() {
    let s = TestServer::on(Transport::Quic).await;
    let (mut c, _) = s.connect_synced("mallory", "phone").await;
    // Announces 4 GiB - 1 and sends nothing more.
    c.writer
        .send_unframed(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]))
        .await
        .unwrap();
    let e = next_error(&mut c).await;
    assert_eq!(e.code, codes::TOO_LARGE);
    assert!(e.desc.contains("4294967295"), "{}", e.desc);
    assert!(until_closed(&mut c).await.is_none());
    still_serving_quic(&s).await;
}

#[tokio::test]
async fn a_stream_reset_mid_frame_ends_only_that_session() {
    let s = TestServer::on(Transport::Quic).await;
    let (mut bystander, _) = s.connect_synced("bystander", "phone").await;
    let (_endpoint, connection, mut send, _recv) = raw_login(&s, "mallory").await;
    // Half a frame, then the stream is reset.
    send.write_all(&[0, 0, 0, 100, 1, 2, 3]).await.unwrap();
    send.reset(quinn::VarInt::from_u32(9)).unwrap();
    let closed = tokio::time::timeout(WAIT, connection.closed())
        .await
        .expect("the server must close the connection");
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(_)),
        "{closed:?}"
    );
    let ack = send_acked(&mut bystander, "b-1", "mallory", "still here").await;
    assert!(ack.sequence > 0);
}

#[tokio::test]
async fn quic_connections_over_the_limit_are_refused() {
    let s = TestServer::on_with(Transport::Quic, |c| c.max_connections = 2).await;
    // Each node counts its own connections.
    s.pin();
    let tokens = [s.token("a").await, s.token("b").await, s.token("c").await];
    // The token calls' HTTP connections give their slots back first.
    until_open_slots(&s, 0).await;
    let mut a = s.try_connect(&tokens[0], "phone").await.unwrap();
    let _b = s.try_connect(&tokens[1], "phone").await.unwrap();
    match s.try_connect(&tokens[2], "phone").await {
        Err(ClientError::Quic(e)) => assert!(e.contains("refused"), "{e}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    a.writer.close().await.unwrap();
    until_open_slots(&s, 1).await;
    let mut c = s.try_connect(&tokens[2], "phone").await.unwrap();
    read_backlog(&mut c).await;
}
