//! REST answer bodies shared by the server and the client library.

use serde::{Deserialize, Serialize};

/// The `data` of the answer, field for field as the manual shows it.
#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenData {
    pub app_id: u64,
    pub app_package: String,
    pub app_account: String,
    pub mi_chid: u32,
    pub mi_user_id: u64,
    pub mi_user_security_key: String,
    pub token: String,
}
