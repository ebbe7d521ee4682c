//! The manual's recent contacts (最近通讯列表): `GET /api/contact/` lists the
//! caller's conversations of the last `contacts_window_secs`, newest first;
//! `DELETE /api/contact/p2p/session?member=` and
//! `DELETE /api/contact/p2t/session?topicId=` remove one entry (until its next
//! message) and answer with the updated list. Every value is a JSON string, as the
//! manual quotes them; `payload` is base64 like history's.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::caller::{authenticate_any, existing_account, Caller};
use super::{success, ApiError};
use crate::names;
use crate::sequence::floor_at;
use crate::state::AppState;
use crate::store::{Contact, Peer};

#[derive(utoipa::ToSchema, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Entry {
    user_type: &'static str,
    id: String,
    name: String,
    timestamp: String,
    last_message: LastMessage,
}

#[derive(utoipa::ToSchema, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LastMessage {
    from_uuid: String,
    from_account: String,
    payload: String,
    sequence: String,
}

fn entry(contact: Contact) -> Entry {
    let (user_type, id) = match contact.peer {
        Peer::User(uuid) => ("USER", uuid),
        Peer::Topic(topic_id) => ("TOPIC", topic_id),
    };
    let last = contact.last;
    Entry {
        user_type,
        id: id.to_string(),
        name: contact.name,
        timestamp: last.ts.to_string(),
        last_message: LastMessage {
            from_uuid: last.envelope.from_uuid.to_string(),
            from_account: last.envelope.from_account,
            payload: base64::engine::general_purpose::STANDARD.encode(&last.envelope.payload),
            sequence: last.seq.to_string(),
        },
    }
}

/// The caller's list as the manual answers it.
async fn list(state: &AppState, caller: &Caller) -> Result<Response, ApiError> {
    let window_secs = state
        .directory
        .cached_app(caller.app.app_id)
        .and_then(|e| e.settings.contacts_window_secs)
        .unwrap_or(state.config.contacts_window_secs);
    let window_ms = window_secs.saturating_mul(1000);
    let since = floor_at(state.clock.now_ms().saturating_sub(window_ms));
    let contacts = state
        .store
        .contacts(caller.uuid, since, state.config.contacts_max_entries)
        .await
        .map_err(ApiError::internal)?;
    Ok(success(contacts.into_iter().map(entry).collect::<Vec<_>>()))
}

/// `GET /api/contact/`
pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate_any(&state, &headers).await?;
    list(&state, &caller).await
}

#[derive(Debug, Deserialize)]
pub struct MemberQuery {
    member: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct TopicQuery {
    #[serde(rename = "topicId")]
    topic_id: Option<String>,
}

async fn clear(state: &AppState, caller: &Caller, peer: Peer) -> Result<Response, ApiError> {
    state.quotas.charge(
        caller.app.app_id,
        Some(caller.uuid),
        1,
        crate::time::now_ms(),
    )?;
    state
        .store
        .clear_contact(caller.uuid, peer)
        .await
        .map_err(ApiError::internal)?;
    list(state, caller).await
}

/// `DELETE /api/contact/p2p/session?member=`
pub async fn delete_p2p(
    State(state): State<Arc<AppState>>,
    Query(query): Query<MemberQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate_any(&state, &headers).await?;
    let raw = query.member.as_deref().unwrap_or("");
    if raw.trim().is_empty() {
        return Err(ApiError::bad_request(
            "member query parameter is missing or empty",
        ));
    }
    let member = names::name("member", raw)?;
    let peer = existing_account(&state, caller.app.app_id, member).await?;
    clear(&state, &caller, Peer::User(peer)).await
}

/// `DELETE /api/contact/p2t/session?topicId=`
pub async fn delete_p2t(
    State(state): State<Arc<AppState>>,
    Query(query): Query<TopicQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate_any(&state, &headers).await?;
    let raw = query.topic_id.as_deref().unwrap_or("").trim();
    if raw.is_empty() {
        return Err(ApiError::bad_request(
            "topicId query parameter is missing or empty",
        ));
    }
    let topic_id: u64 = raw.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "topicId must be a number, got {}",
            names::quote(raw)
        ))
    })?;
    super::topic::app_topic(&state, caller.app.app_id, topic_id).await?;
    clear(&state, &caller, Peer::Topic(topic_id)).await
}
