//! The manual's message history (消息漫游): six queries, p2p and topic, by time,
//! by count and by sequence, under `/api/msg/{p2p,p2t}/…` (every spelling the
//! manual prints, with and without the trailing slash). Token auth only.
//!
//! A message's `ts` is the millisecond of its sequence, so time order and sequence
//! order agree and a time range is a sequence range (`sequence::floor_at`).
//! Answers list messages oldest first, at most `history_max_messages`. A page that
//! has to stop inside a millisecond stops before it instead ([`cut_at_millisecond`]),
//! so paging by time never skips or repeats a message that shares a millisecond:
//! - by count, `timestamp` (the earliest `ts` returned) fed back as `utcToTime`
//!   continues with the older messages;
//! - by time, `utcFromTime` = the last `ts` + 1 continues with the newer ones;
//! - by sequence, `startSeq` = the last `sequence` + 1.
//!
//! If one millisecond alone holds more messages than fit, the answer holds that
//! whole millisecond (at most 4096 messages: the sequence layout's limit).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{post, MethodRouter};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::caller::{authenticate_any, existing_account, Caller};
use super::{parse_json, read_body, success, ApiError};
use crate::message::{Sequenced, Target};
use crate::names;
use crate::sequence::floor_at;
use crate::state::AppState;
use crate::store::{Conversation, HistoryRange, Order};

/// Most messages that can share one millisecond (256 per node, 16 nodes).
const MAX_PER_MILLISECOND: usize = 4096;

/// A number sent as a JSON number or a string of digits (the manual prints the
/// placeholders unquoted).
fn de_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        Int(i64),
        Str(String),
    }
    match Option::<Num>::deserialize(d)? {
        None => Ok(None),
        Some(Num::Int(n)) => Ok(Some(n)),
        Some(Num::Str(s)) => s.trim().parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!("expected a number, got {}", names::quote(&s)))
        }),
    }
}

/// An account name sent as a JSON string or number.
fn de_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Name {
        Str(String),
        Int(i64),
    }
    Ok(Option::<Name>::deserialize(d)?.map(|n| match n {
        Name::Str(s) => s,
        Name::Int(n) => n.to_string(),
    }))
}

/// Every field any of the six queries takes; each query checks what it needs.
#[derive(utoipa::ToSchema, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Query {
    #[serde(default, deserialize_with = "de_number")]
    app_id: Option<i64>,
    #[serde(default, deserialize_with = "de_name")]
    from_account: Option<String>,
    #[serde(default, deserialize_with = "de_name")]
    to_account: Option<String>,
    #[serde(default, deserialize_with = "de_name")]
    account: Option<String>,
    #[serde(default, deserialize_with = "de_number")]
    topic_id: Option<i64>,
    #[serde(default, deserialize_with = "de_number")]
    utc_from_time: Option<i64>,
    #[serde(default, deserialize_with = "de_number")]
    utc_to_time: Option<i64>,
    #[serde(default, deserialize_with = "de_number")]
    start_seq: Option<i64>,
    #[serde(default, deserialize_with = "de_number")]
    stop_seq: Option<i64>,
    #[serde(default, deserialize_with = "de_number")]
    count: Option<i64>,
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::bad_request(format!("{field} is missing")))
}

/// A non-negative number field (times, sequences).
fn unsigned(value: Option<i64>, field: &str) -> Result<u64, ApiError> {
    let v = required(value, field)?;
    u64::try_from(v).map_err(|_| ApiError::bad_request(format!("{field} must not be negative")))
}

/// Which of the three query forms, with its bounds checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `[from, to)` in Unix ms.
    Time { from: u64, to: u64 },
    /// The `count` newest before `to` (exclusive).
    Count { to: u64, count: usize },
    /// `[start, stop)` sequences.
    Sequence { start: u64, stop: u64 },
}

/// Which query a route answers: by time, by count or by sequence.
#[derive(Debug, Clone, Copy)]
pub enum FormKind {
    Time,
    Count,
    Sequence,
}

impl Query {
    fn form(&self, kind: FormKind, state: &AppState) -> Result<Form, ApiError> {
        let max = state.config.history_max_messages;
        match kind {
            FormKind::Time => {
                let from = unsigned(self.utc_from_time, "utcFromTime")?;
                let to = unsigned(self.utc_to_time, "utcToTime")?;
                if from > to {
                    return Err(ApiError::bad_request(
                        "utcFromTime is after utcToTime; the range is [utcFromTime, utcToTime)",
                    ));
                }
                let span = state.config.history_max_span_secs.saturating_mul(1000);
                if to - from > span {
                    crate::log_limited!(
                        info,
                        "history query refused: span over history_max_span_secs"
                    );
                    return Err(ApiError::bad_request(format!(
                        "utcFromTime to utcToTime spans more than {} s (history_max_span_secs)",
                        state.config.history_max_span_secs
                    )));
                }
                Ok(Form::Time { from, to })
            }
            FormKind::Count => {
                let to = unsigned(self.utc_to_time, "utcToTime")?;
                let count = required(self.count, "count")?;
                if count <= 0 || count as u64 > max as u64 {
                    crate::log_limited!(info, count, "history query refused: count out of range");
                    return Err(ApiError::bad_request(format!(
                        "count must be 1 to {max} (history_max_messages), got {count}"
                    )));
                }
                Ok(Form::Count {
                    to,
                    count: count as usize,
                })
            }
            FormKind::Sequence => {
                let start = unsigned(self.start_seq, "startSeq")?;
                let stop = unsigned(self.stop_seq, "stopSeq")?;
                if start > stop {
                    return Err(ApiError::bad_request(
                        "startSeq is after stopSeq; the range is [startSeq, stopSeq)",
                    ));
                }
                Ok(Form::Sequence { start, stop })
            }
        }
    }
}

/// Where a page cut inside a run of equal timestamps must go instead.
#[derive(Debug, PartialEq, Eq)]
pub enum Cut {
    /// Answer with these.
    Page(Vec<Sequenced>),
    /// The page is one millisecond only: answer with that whole millisecond.
    Millisecond(u64),
}

/// Cuts a page read in the direction of paging (at most `limit + 1` messages, the
/// extra one showing there is more) so it never ends inside a millisecond: when
/// the last kept message and the first left out share a `ts`, that millisecond's
/// messages leave the page, unless they are all of it.
pub fn cut_at_millisecond(mut page: Vec<Sequenced>, limit: usize) -> Cut {
    if limit == 0 {
        return Cut::Page(Vec::new());
    }
    if page.len() <= limit {
        return Cut::Page(page);
    }
    let boundary_ts = page[limit].ts;
    page.truncate(limit);
    if page[limit - 1].ts != boundary_ts {
        return Cut::Page(page);
    }
    page.retain(|m| m.ts != boundary_ts);
    if page.is_empty() {
        Cut::Millisecond(boundary_ts)
    } else {
        Cut::Page(page)
    }
}

/// Reads one query form of a conversation, oldest first.
async fn read(
    state: &AppState,
    conversation: Conversation,
    viewer: u64,
    form: Form,
) -> Result<Vec<Sequenced>, ApiError> {
    let max = state.config.history_max_messages;
    let store = &state.store;
    let range = |from_seq: u64, to_seq: u64, limit: usize, order: Order| HistoryRange {
        conversation,
        viewer,
        from_seq,
        to_seq,
        limit,
        order,
    };
    let fetch = |r: HistoryRange| async move { store.history(r).await.map_err(ApiError::internal) };
    let millisecond = |ms: u64| {
        range(
            floor_at(ms),
            floor_at(ms + 1),
            MAX_PER_MILLISECOND,
            Order::OldestFirst,
        )
    };
    match form {
        Form::Time { from, to } => {
            let (from_seq, to_seq) = (floor_at(from), floor_at(to));
            let page = fetch(range(from_seq, to_seq, max + 1, Order::OldestFirst)).await?;
            match cut_at_millisecond(page, max) {
                Cut::Page(page) => Ok(page),
                Cut::Millisecond(ms) => fetch(millisecond(ms)).await,
            }
        }
        Form::Count { to, count } => {
            let page = fetch(range(0, floor_at(to), count + 1, Order::NewestFirst)).await?;
            let mut page = match cut_at_millisecond(page, count) {
                Cut::Page(page) => page,
                Cut::Millisecond(ms) => return fetch(millisecond(ms)).await,
            };
            page.reverse();
            Ok(page)
        }
        Form::Sequence { start, stop } => fetch(range(start, stop, max, Order::OldestFirst)).await,
    }
}

/// One message of a p2p answer (field order as the manual prints it).
#[derive(utoipa::ToSchema, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct P2pMessage {
    sequence: u64,
    payload: String,
    ts: u64,
    from_account: String,
    to_account: String,
}

#[derive(utoipa::ToSchema, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct P2pAnswer {
    app_id: u64,
    messages: Vec<P2pMessage>,
    row: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<u64>,
}

/// One message of a topic answer; `toAccount` only where the manual lists it.
#[derive(utoipa::ToSchema, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TopicMessage {
    sequence: u64,
    payload: String,
    ts: u64,
    from_account: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    to_account: Option<String>,
}

#[derive(utoipa::ToSchema, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TopicAnswer {
    app_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic_id: Option<u64>,
    row: usize,
    messages: Vec<TopicMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<u64>,
}

fn base64(payload: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(payload)
}

/// The earliest `ts` returned (0 when none), for the forms where it means that.
fn earliest(form: Form, messages: &[Sequenced]) -> Option<u64> {
    match form {
        Form::Time { .. } => None,
        _ => Some(messages.first().map_or(0, |m| m.ts)),
    }
}

/// The token's caller, checked against the body's `appId`; the body is read only
/// after the token is checked.
async fn caller_and_query(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Caller, Query), ApiError> {
    if headers.get("token").is_none() {
        return Err(ApiError::unauthorized(
            "history queries take the querying user's token in a token header",
        ));
    }
    let caller = authenticate_any(state, headers).await?;
    let body = read_body(state, body, state.config.body_limit_query_bytes).await?;
    let query: Query = parse_json(&body)?;
    let app_id = required(query.app_id, "appId")?;
    if app_id < 0 || app_id as u64 != caller.app.app_id {
        return Err(ApiError::new(
            403,
            format!("appId {app_id} is not the app of the token"),
        ));
    }
    Ok((caller, query))
}

async fn p2p(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Body,
    kind: FormKind,
) -> Result<Response, ApiError> {
    let (caller, mut query) = caller_and_query(&state, &headers, body).await?;
    let from = required(query.from_account.take(), "fromAccount")?;
    let from = names::name("fromAccount", &from)?.to_owned();
    let to = required(query.to_account.take(), "toAccount")?;
    let to = names::name("toAccount", &to)?.to_owned();
    let form = query.form(kind, &state)?;
    let other = if caller.account == from {
        to
    } else if caller.account == to {
        from
    } else {
        return Err(ApiError::new(
            403,
            "the token's account must be fromAccount or toAccount",
        ));
    };
    let peer = existing_account(&state, caller.app.app_id, &other).await?;
    let found = read(
        &state,
        Conversation::Pair(caller.uuid, peer),
        caller.uuid,
        form,
    )
    .await?;
    let timestamp = earliest(form, &found);
    let messages: Vec<P2pMessage> = found
        .into_iter()
        .map(|m| {
            let to_account = match &m.envelope.target {
                Target::User { account, .. } => account.clone(),
                Target::Topic { topic_id } => topic_id.to_string(),
            };
            P2pMessage {
                sequence: m.seq,
                payload: base64(&m.envelope.payload),
                ts: m.ts,
                from_account: m.envelope.from_account,
                to_account,
            }
        })
        .collect();
    Ok(success(P2pAnswer {
        app_id: caller.app.app_id,
        row: messages.len(),
        messages,
        timestamp,
    }))
}

async fn p2t(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Body,
    kind: FormKind,
) -> Result<Response, ApiError> {
    let (caller, mut query) = caller_and_query(&state, &headers, body).await?;
    let account = required(query.account.take(), "account")?;
    let account = names::name("account", &account)?;
    if account != caller.account {
        return Err(ApiError::new(403, "account must be the token's account"));
    }
    let topic_id = required(query.topic_id, "topicId")?;
    let topic_id = u64::try_from(topic_id)
        .map_err(|_| ApiError::bad_request("topicId must not be negative"))?;
    let form = query.form(kind, &state)?;
    let topic = super::topic::app_topic(&state, caller.app.app_id, topic_id).await?;
    let member = topic.is_member(caller.uuid)
        || state
            .store
            .was_member(caller.uuid, topic_id)
            .await
            .map_err(ApiError::internal)?;
    if !member {
        return Err(ApiError::new(
            403,
            format!(
                "{} is not a member of topic {topic_id}",
                names::quote(account)
            ),
        ));
    }
    let found = read(&state, Conversation::Topic(topic_id), caller.uuid, form).await?;
    let timestamp = earliest(form, &found);
    let with_to = matches!(form, Form::Sequence { .. });
    let messages: Vec<TopicMessage> = found
        .into_iter()
        .map(|m| TopicMessage {
            sequence: m.seq,
            payload: base64(&m.envelope.payload),
            ts: m.ts,
            from_account: m.envelope.from_account,
            to_account: with_to.then(|| topic_id.to_string()),
        })
        .collect();
    Ok(success(TopicAnswer {
        app_id: caller.app.app_id,
        topic_id: matches!(form, Form::Time { .. }).then_some(topic_id),
        row: messages.len(),
        messages,
        timestamp,
    }))
}

/// The route of a p2p query form (`/api/msg/p2p/…`).
pub fn p2p_route(kind: FormKind) -> MethodRouter<Arc<AppState>> {
    post(
        move |State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body| {
            p2p(state, headers, body, kind)
        },
    )
}

/// The route of a topic query form (`/api/msg/p2t/…`).
pub fn p2t_route(kind: FormKind) -> MethodRouter<Arc<AppState>> {
    post(
        move |State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body| {
            p2t(state, headers, body, kind)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Envelope;

    fn at(seq: u64, ts: u64) -> Sequenced {
        Sequenced {
            seq,
            ts,
            envelope: Envelope {
                app_id: 1,
                from_uuid: 1,
                from_account: "a".into(),
                from_resource: String::new(),
                packet_id: seq.to_string(),
                target: Target::Topic { topic_id: 1 },
                biz_type: String::new(),
                payload: bytes::Bytes::new(),
            },
        }
    }

    fn seqs(cut: Cut) -> Vec<u64> {
        match cut {
            Cut::Page(p) => p.iter().map(|m| m.seq).collect(),
            Cut::Millisecond(ms) => vec![ms + 1_000_000],
        }
    }

    #[test]
    fn a_short_page_is_whole() {
        assert_eq!(
            seqs(cut_at_millisecond(vec![at(3, 10), at(2, 10)], 3)),
            vec![3, 2]
        );
        assert_eq!(seqs(cut_at_millisecond(vec![], 3)), Vec::<u64>::new());
    }

    #[test]
    fn a_cut_between_milliseconds_stays() {
        let page = vec![at(5, 12), at(4, 11), at(3, 10)];
        assert_eq!(seqs(cut_at_millisecond(page, 2)), vec![5, 4]);
    }

    #[test]
    fn a_cut_inside_a_millisecond_moves_before_it() {
        // Newest first: 5 (ms 12), then 4, 3, 2 share ms 11; a page of 3 would keep
        // 4 and 3 and leave 2 out, so ms 11 leaves the page entirely.
        let page = vec![at(5, 12), at(4, 11), at(3, 11), at(2, 11)];
        assert_eq!(seqs(cut_at_millisecond(page, 3)), vec![5]);
    }

    #[test]
    fn a_page_of_one_millisecond_asks_for_all_of_it() {
        let page = vec![at(4, 11), at(3, 11), at(2, 11)];
        assert_eq!(cut_at_millisecond(page, 2), Cut::Millisecond(11));
    }
}
