//! REST answer bodies shared by the server and the client library.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The `data` of the answer, field for field as the manual shows it. `appId` and
/// `miUserId` are JSON strings of decimal digits, as the MIMC service served them:
/// the MIMC SDKs compare them as strings and encode them as 64-bit integers from
/// decimal strings (mimc-wire.md §1). Readers accept a number too.
#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenData {
    #[serde(with = "decimal_string")]
    #[schema(value_type = String, example = "2882303761517")]
    pub app_id: u64,
    pub app_package: String,
    pub app_account: String,
    pub mi_chid: u32,
    #[serde(with = "decimal_string")]
    #[schema(value_type = String, example = "1")]
    pub mi_user_id: u64,
    pub mi_user_security_key: String,
    pub token: String,
}

/// A u64 written as a JSON string of decimal digits, read from a string or a number.
mod decimal_string {
    use super::*;

    pub(super) fn serialize<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(n)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(u64),
        String(String),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match NumberOrString::deserialize(d)? {
            NumberOrString::Number(n) => Ok(n),
            NumberOrString::String(s) => s.parse().map_err(|_| {
                serde::de::Error::custom(format!("expected decimal digits, got {s:?}"))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_written_as_strings_and_read_either_way() {
        let data = TokenData {
            app_id: 2882303761517,
            app_package: "default".into(),
            app_account: "ann".into(),
            mi_chid: 9,
            mi_user_id: 12,
            mi_user_security_key: "a2V5".into(),
            token: "t".into(),
        };
        let json = serde_json::to_value(&data).unwrap();
        assert_eq!(json["appId"], "2882303761517");
        assert_eq!(json["miUserId"], "12");
        assert_eq!(json["miChid"], 9);
        let mut numbers = json.clone();
        numbers["appId"] = serde_json::json!(2882303761517u64);
        numbers["miUserId"] = serde_json::json!(12);
        for v in [json, numbers] {
            let back: TokenData = serde_json::from_value(v).unwrap();
            assert_eq!((back.app_id, back.mi_user_id), (2882303761517, 12));
        }
        let mut bad = serde_json::to_value(&data).unwrap();
        bad["miUserId"] = serde_json::json!("12a");
        assert!(serde_json::from_value::<TokenData>(bad).is_err());
    }
}
