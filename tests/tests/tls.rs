//! Services reach NATS over TLS, verifying the server against a CA file, as
//! `NATS_TLS_CA` configures.

use std::time::Duration;

use serde_json::json;
use sophia_tests::tools::{call, text_of, wait_for_tool};
use sophia_tests::{Mesh, NatsServer};

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA and a server certificate for 127.0.0.1/localhost, as PEM files.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sophia test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let server_key = rcgen::KeyPair::generate().unwrap();
        let mut server_params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        server_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "nats");
        let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), server_cert.pem()).unwrap();
        std::fs::write(
            dir.path().join("server-key.pem"),
            server_key.serialize_pem(),
        )
        .unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

#[tokio::test]
async fn the_mesh_runs_over_tls_to_nats() {
    let pki = Pki::new();
    let nats = NatsServer::start(vec![
        "--tls".into(),
        "--tlscert".into(),
        pki.path("server.pem"),
        "--tlskey".into(),
        pki.path("server-key.pem"),
    ]);
    let mut mesh = Mesh::on(nats);
    let mut worker = mesh.worker_config();
    worker.nats.tls_ca = Some(pki.path("ca.pem").into());
    mesh.worker_with(echo_worker::echo_worker(), worker).await;
    let mut gateway = mesh.gateway_config();
    gateway.nats.tls_ca = Some(pki.path("ca.pem").into());
    mesh.start_gateway_with(gateway).await;

    let client = mesh.client().await;
    wait_for_tool(&client, "echo").await;
    let result = call(&client, "echo", json!({"text": "encrypted"})).await;
    assert_eq!(text_of(&result), "encrypted");

    // The CA file is what makes it work: a client that does not trust our CA
    // (async-nats upgrades to TLS by itself, then verifies against the
    // system roots) is turned away.
    let plain = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(mesh.nats.url())
        .await;
    assert!(plain.is_err(), "a client without the CA cannot connect");
}
