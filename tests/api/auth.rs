use std::time::Duration;

use fleethub::auth::{Authenticator, Role};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::*;

async fn ws_status(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => 101,
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test]
async fn missing_forged_and_expired_tokens_get_401_before_the_upgrade() {
    let app = spawn_app().await;
    let base = format!("ws://127.0.0.1:{}", app.port);
    assert_eq!(ws_status(&format!("{base}/ws/driver")).await, 401);
    assert_eq!(ws_status(&format!("{base}/ws/dashboard")).await, 401);
    let forged = Authenticator::new(b"some-other-secret-some-other-secret!!")
        .issue("d1", Role::Driver, Some("acme"), Duration::from_secs(60))
        .unwrap();
    assert_eq!(ws_status(&app.ws_url("/ws/driver", &forged)).await, 401);
    let expired = expired_token(Role::Driver);
    assert_eq!(ws_status(&app.ws_url("/ws/driver", &expired)).await, 401);
    let resp = app
        .http
        .get(app.url("/api/v1/drivers"))
        .bearer_auth(expired_token(Role::Admin))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "token_expired");
}

fn expired_token(role: Role) -> String {
    let claims = fleethub::auth::Claims {
        sub: "d1".into(),
        role,
        fleet: Some("acme".into()),
        exp: (now_ms() / 1000 - 10) as u64,
        iat: (now_ms() / 1000 - 100) as u64,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn the_wrong_role_for_an_endpoint_gets_403() {
    let app = spawn_app().await;
    let dispatcher = app.token(Role::Dispatcher, "x", Some("acme"));
    let driver = app.token(Role::Driver, "d1", Some("acme"));
    assert_eq!(ws_status(&app.ws_url("/ws/driver", &dispatcher)).await, 403);
    assert_eq!(ws_status(&app.ws_url("/ws/dashboard", &driver)).await, 403);
    let resp = app
        .http
        .get(app.url("/api/v1/drivers"))
        .bearer_auth(&driver)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = app
        .http
        .get(app.url("/api/v1/subscriptions"))
        .bearer_auth(&dispatcher)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn a_bearer_header_works_as_well_as_the_query_parameter() {
    let app = spawn_app().await;
    let token = app.token(Role::Driver, "d1", Some("acme"));
    let mut req = format!("ws://127.0.0.1:{}/ws/driver", app.port)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut client = Client { ws };
    assert_eq!(client.next_of("welcome").await["driver"], "d1");
}

#[tokio::test]
async fn a_socket_whose_token_expires_is_closed() {
    let app = spawn_app().await;
    let auth = Authenticator::new(SECRET.as_bytes());
    let token = auth
        .issue("d1", Role::Driver, Some("acme"), Duration::from_secs(1))
        .unwrap();
    let mut client = Client::connect(&app.ws_url("/ws/driver", &token)).await;
    client.next_of("welcome").await;
    assert_eq!(
        client.ended().await,
        Ended::Closed(1008, "token expired".into())
    );
}
