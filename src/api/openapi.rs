//! `GET /openapi.json`: an OpenAPI 3.1 description of every route of
//! [`super::route_list`] — the operation manual's REST API, the admin API and the
//! operator's endpoints — with request and answer schemas derived from the
//! handlers' own types (`utoipa::ToSchema`). A test checks that every route the
//! server answers is described.

use std::borrow::Cow;
use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder};
use utoipa::openapi::security::{SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, HttpMethod, InfoBuilder, OpenApi, OpenApiBuilder,
    PathsBuilder, Ref, RefOr, Required, ResponseBuilder,
};
use utoipa::ToSchema;

use super::{admin, blacklist, contact, history, push, token, topic, RouteInfo};

/// Collected component schemas.
type Schemas = Vec<(String, RefOr<Schema>)>;
/// Adds a type's schema (and those it uses) to the components; returns a reference.
type SchemaOf = fn(&mut Schemas) -> RefOr<Schema>;

fn schema<T: ToSchema>(schemas: &mut Schemas) -> RefOr<Schema> {
    let name = T::name().to_string();
    T::schemas(schemas);
    schemas.push((name.clone(), T::schema()));
    RefOr::Ref(Ref::from_schema_name(name))
}

fn list_of<T: ToSchema>(schemas: &mut Schemas) -> RefOr<Schema> {
    let item = schema::<T>(schemas);
    RefOr::T(Schema::Array(ArrayBuilder::new().items(item).build()))
}

fn any_object(_: &mut Schemas) -> RefOr<Schema> {
    RefOr::T(Schema::Object(ObjectBuilder::new().build()))
}

/// How a call authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// Nothing (operator endpoints; the token API and pushes carry app
    /// credentials in the body).
    None,
    /// A `token` header, or `appKey` + `appSecret` + `appAccount` headers.
    User,
    /// A `token` header only.
    Token,
    /// `Authorization: Bearer <admin_token>`.
    Admin,
}

/// What the document says about one route.
struct Op {
    summary: &'static str,
    tag: &'static str,
    auth: Auth,
    body: Option<SchemaOf>,
    /// The `data` of the envelope; `None`: the answer is not in the envelope.
    data: Option<SchemaOf>,
    query: &'static [(&'static str, &'static str)],
}

fn op(
    summary: &'static str,
    tag: &'static str,
    auth: Auth,
    body: Option<SchemaOf>,
    data: Option<SchemaOf>,
) -> Op {
    Op {
        summary,
        tag,
        auth,
        body,
        data,
        query: &[],
    }
}

/// The description of `method path`, if there is one.
fn describe(method: &str, path: &str) -> Option<Op> {
    use Auth::*;
    let any: Option<SchemaOf> = Some(any_object);
    let app: Option<SchemaOf> = Some(schema::<crate::admin::AppView>);
    let patch: Option<SchemaOf> = Some(schema::<crate::admin::AppPatch>);
    let topic_info: Option<SchemaOf> = Some(schema::<topic::TopicWithMembers>);
    let history_body: Option<SchemaOf> = Some(schema::<history::Query>);
    let push_body: Option<SchemaOf> = Some(schema::<push::PushBody>);
    let plain = |summary, tag| op(summary, tag, None, Option::None, Option::None);
    Some(match (method, path) {
        ("GET", "/mimc") => plain("WebSocket upgrade for MIMC web SDK clients (no subprotocol; docs/mimc-compat.md; off with mimc = false)", "operator"),
        ("GET", "/ws") => plain("WebSocket upgrade to the Courier wire protocol (subprotocol courier.v1; docs/protocol.md)", "operator"),
        ("GET", "/healthz") => plain("Liveness: {\"status\":\"ok\"}", "operator"),
        ("GET", "/readyz") => plain("Readiness: 200 {\"status\":\"ready\"}, or 503 when shutting down or the store fails", "operator"),
        ("GET", "/metrics") => plain("Prometheus text format", "operator"),
        ("GET", "/openapi.json") => plain("This document", "operator"),
        ("GET", "/demo") => plain("The web demo: redirects to /demo/ (off with demo = false)", "demo"),
        ("GET", "/demo/") => plain("The web demo's page", "demo"),
        ("GET", "/demo/{file}") => plain("The web demo's script and style", "demo"),
        ("POST", "/demo/token") => op("A token for an account of the default app, for the demo page (only on a loopback listener unless demo_tokens = \"on\")", "demo", None, Some(schema::<super::demo::DemoTokenRequest>), Some(schema::<crate::wire::rest::TokenData>)),
        ("POST", "/api/account/token") => op("Get a user's token (app credentials in the body)", "token", None, Some(schema::<token::TokenRequest>), Some(schema::<crate::wire::rest::TokenData>)),
        ("POST", "/api/topic/{app_id}") => op("Create a topic", "topic", User, Some(schema::<topic::CreateBody>), topic_info),
        ("GET", "/api/topic/{app_id}/account") => op("Topics the caller belongs to", "topic", User, Option::None, Some(list_of::<topic::TopicInfo>)),
        ("GET", "/api/topic/{app_id}/{topic_id}") => op("A topic and its members", "topic", User, Option::None, topic_info),
        ("PUT", "/api/topic/{app_id}/{topic_id}") => op("Update a topic (owner)", "topic", User, Some(schema::<topic::UpdateBody>), topic_info),
        ("DELETE", "/api/topic/{app_id}/{topic_id}") => op("Dismiss a topic (owner)", "topic", User, Option::None, any),
        ("POST", "/api/topic/{app_id}/{topic_id}/accounts") => op("Invite accounts", "topic", User, Some(schema::<topic::AccountsBody>), topic_info),
        ("DELETE", "/api/topic/{app_id}/{topic_id}/accounts") => Op {
            query: &[("accounts", "accounts to remove, comma-separated")],
            ..op("Kick members (owner)", "topic", User, Option::None, topic_info)
        },
        ("DELETE", "/api/topic/{app_id}/{topic_id}/account") => op("Leave a topic", "topic", User, Option::None, any),
        ("POST", "/api/push/p2p") => op("Push a message to one account", "push", None, push_body, any),
        ("POST", "/api/push/p2p/more") => op("Push a message to several accounts", "push", None, push_body, any),
        ("POST", "/api/push/p2t") => op("Push a message to a topic", "push", None, push_body, any),
        ("POST", "/api/push/p2t/more") => op("Push a message to several topics", "push", None, push_body, any),
        ("POST", "/api/blacklist") => op("Blacklist an account", "blacklist", User, Some(schema::<blacklist::AddBody>), any),
        ("DELETE", "/api/blacklist") => Op {
            query: &[("blackAccount", "the account to take off the list")],
            ..op("Take an account off the blacklist", "blacklist", User, Option::None, any)
        },
        ("GET", "/api/blacklist") => Op {
            query: &[("blackAccount", "the account to check")],
            ..op("Whether an account is on the blacklist: {\"isBlack\": bool}", "blacklist", User, Option::None, any)
        },
        ("POST", "/api/msg/p2p/query" | "/api/msg/p2p/queryOnTime") => op("p2p history by time", "history", Token, history_body, Some(schema::<history::P2pAnswer>)),
        ("POST", "/api/msg/p2p/queryOnCount") => op("p2p history, the newest `count` before a time", "history", Token, history_body, Some(schema::<history::P2pAnswer>)),
        ("POST", "/api/msg/p2p/queryOnSequence") => op("p2p history by sequence", "history", Token, history_body, Some(schema::<history::P2pAnswer>)),
        ("POST", "/api/msg/p2t/query" | "/api/msg/p2t/queryOnTime") => op("Topic history by time", "history", Token, history_body, Some(schema::<history::TopicAnswer>)),
        ("POST", "/api/msg/p2t/queryOnCount") => op("Topic history, the newest `count` before a time", "history", Token, history_body, Some(schema::<history::TopicAnswer>)),
        ("POST", "/api/msg/p2t/queryOnSequence") => op("Topic history by sequence", "history", Token, history_body, Some(schema::<history::TopicAnswer>)),
        ("GET", "/api/contact") => op("Recent contacts, newest first", "contact", Token, Option::None, Some(list_of::<contact::Entry>)),
        ("DELETE", "/api/contact/p2p/session") => Op {
            query: &[("member", "the other account")],
            ..op("Remove a p2p conversation from recent contacts", "contact", Token, Option::None, Some(list_of::<contact::Entry>))
        },
        ("DELETE", "/api/contact/p2t/session") => Op {
            query: &[("topicId", "the topic")],
            ..op("Remove a topic from recent contacts", "contact", Token, Option::None, Some(list_of::<contact::Entry>))
        },
        ("GET", "/admin/apps") => op("Every app", "admin", Admin, Option::None, Some(list_of::<crate::admin::AppView>)),
        ("POST", "/admin/apps") => op("Create an app", "admin", Admin, patch, app),
        ("GET", "/admin/apps/{app_id}") => op("One app", "admin", Admin, Option::None, app),
        ("PATCH", "/admin/apps/{app_id}") => op("Change an app's name or settings (null = the server's default)", "admin", Admin, patch, app),
        ("DELETE", "/admin/apps/{app_id}") => op("Delete an app and its data", "admin", Admin, Option::None, any),
        ("POST", "/admin/apps/{app_id}/secret") => op("Rotate the appSecret", "admin", Admin, Option::None, app),
        ("GET", "/admin/apps/{app_id}/callbacks") => op("Pending and failed callbacks", "admin", Admin, Option::None, Some(schema::<crate::admin::CallbackCounts>)),
        ("GET", "/admin/apps/{app_id}/callbacks/failed") => Op {
            query: &[("after", "list sequences above this (paging)"), ("limit", "at most this many (1–1000, default 100)")],
            ..op("Failed callbacks", "admin", Admin, Option::None, Some(list_of::<crate::admin::FailedView>))
        },
        ("POST", "/admin/apps/{app_id}/callbacks/replay") => op("Send failed callbacks again", "admin", Admin, Some(schema::<admin::ReplayBody>), any),
        _ => return Option::None,
    })
}

/// The envelope `{"code","message","data"}` around `data`.
fn envelope(data: RefOr<Schema>) -> Schema {
    let int = ObjectBuilder::new().schema_type(Type::Integer);
    let text = ObjectBuilder::new().schema_type(Type::String);
    Schema::Object(
        ObjectBuilder::new()
            .property("code", int)
            .required("code")
            .property("message", text)
            .required("message")
            .property("data", data)
            .build(),
    )
}

fn http_method(method: &str) -> HttpMethod {
    match method {
        "POST" => HttpMethod::Post,
        "PUT" => HttpMethod::Put,
        "PATCH" => HttpMethod::Patch,
        "DELETE" => HttpMethod::Delete,
        _ => HttpMethod::Get,
    }
}

/// The path in OpenAPI's spelling, and its parameters (`{app_id}` → `appId`).
fn openapi_path(path: &str) -> (String, Vec<&'static str>) {
    let mut params = Vec::new();
    let mut out = path.to_owned();
    for (axum, name) in [("{app_id}", "appId"), ("{topic_id}", "topicId")] {
        if out.contains(axum) {
            out = out.replace(axum, &format!("{{{name}}}"));
            params.push(name);
        }
    }
    (out, params)
}

/// The whole document, for `routes`. Routes without a description are left out
/// (the test catches them).
pub fn document(routes: &[RouteInfo]) -> OpenApi {
    let mut schemas: Schemas = Vec::new();
    let mut paths = PathsBuilder::new();
    for route in routes {
        let Some(op) = describe(route.method, &route.path) else {
            continue;
        };
        let (path, params) = openapi_path(&route.path);
        let mut operation = OperationBuilder::new()
            .summary(Some(op.summary))
            .tag(op.tag)
            .operation_id(Some(format!("{} {}", route.method, path)));
        for name in params {
            operation = operation.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            );
        }
        for (name, description) in op.query {
            operation = operation.parameter(
                ParameterBuilder::new()
                    .name(*name)
                    .parameter_in(ParameterIn::Query)
                    .description(Some(*description))
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            );
        }
        if let Some(body) = op.body {
            let content = ContentBuilder::new()
                .schema(Some(body(&mut schemas)))
                .build();
            operation = operation.request_body(Some(
                RequestBodyBuilder::new()
                    .content("application/json", content)
                    .required(Some(Required::True))
                    .build(),
            ));
        }
        let ok = match op.data {
            Some(data) => {
                let schema = envelope(data(&mut schemas));
                let content = ContentBuilder::new().schema(Some(schema)).build();
                ResponseBuilder::new()
                    .description("success: {\"code\":200,\"message\":\"success\",\"data\":…}")
                    .content("application/json", content)
            }
            None => ResponseBuilder::new().description("success"),
        };
        operation = operation.response("200", ok.build());
        if op.data.is_some() {
            let error = envelope(RefOr::T(Schema::Object(ObjectBuilder::new().build())));
            let content = ContentBuilder::new().schema(Some(error)).build();
            let error = ResponseBuilder::new()
                .description("error: the envelope with the HTTP status as code, a message saying what is wrong, data null")
                .content("application/json", content);
            operation = operation.response("default", error.build());
        }
        let requirements: Vec<SecurityRequirement> = match op.auth {
            Auth::None => Vec::new(),
            Auth::Token => vec![SecurityRequirement::new("token", Vec::<String>::new())],
            Auth::User => vec![
                SecurityRequirement::new("token", Vec::<String>::new()),
                SecurityRequirement::new("appKey", Vec::<String>::new())
                    .add("appSecret", Vec::<String>::new())
                    .add("appAccount", Vec::<String>::new()),
            ],
            Auth::Admin => vec![SecurityRequirement::new("admin", Vec::<String>::new())],
        };
        if !requirements.is_empty() {
            operation = operation.securities(Some(requirements));
        }
        let item = PathItem::new(http_method(route.method), operation.build());
        paths = paths.path(path, item);
    }
    let header_key = |name: &str| SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(name)));
    let mut components = ComponentsBuilder::new()
        .security_scheme("token", header_key("token"))
        .security_scheme("appKey", header_key("appKey"))
        .security_scheme("appSecret", header_key("appSecret"))
        .security_scheme("appAccount", header_key("appAccount"))
        .security_scheme(
            "admin",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    for (name, schema) in schemas {
        components = components.schema(name, schema);
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Courier")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The MIMC operation manual's REST API, Courier's admin API and its operator endpoints. Answers use the envelope {\"code\",\"message\",\"data\"}. Paths under /api also answer with a trailing slash.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components.build()))
        .build()
}

fn json_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let doc = document(&super::route_list());
        doc.to_pretty_json().unwrap_or_else(|e| {
            tracing::error!(error = %e, "openapi: cannot render the document");
            "{}".to_owned()
        })
    })
}

/// `GET /openapi.json`
pub async fn serve() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        Cow::Borrowed(json_text()),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_renders() {
        let text = super::json_text();
        let doc: serde_json::Value = serde_json::from_str(text).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for name in [
            "AppView",
            "AppPatch",
            "SettingsPatch",
            "PushBody",
            "P2pAnswer",
            "Entry",
        ] {
            assert!(
                schemas.contains_key(name),
                "{name} missing: {:?}",
                schemas.keys()
            );
        }
    }
}
