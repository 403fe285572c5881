//! Operation counters served at `/v2/stats/store`.

use serde::{Deserialize, Serialize};

/// etcd's store statistics, serialized with etcd's field names and order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    #[serde(rename = "getsSuccess")]
    pub get_success: u64,
    #[serde(rename = "getsFail")]
    pub get_fail: u64,
    #[serde(rename = "setsSuccess")]
    pub set_success: u64,
    #[serde(rename = "setsFail")]
    pub set_fail: u64,
    #[serde(rename = "deleteSuccess")]
    pub delete_success: u64,
    #[serde(rename = "deleteFail")]
    pub delete_fail: u64,
    #[serde(rename = "updateSuccess")]
    pub update_success: u64,
    #[serde(rename = "updateFail")]
    pub update_fail: u64,
    #[serde(rename = "createSuccess")]
    pub create_success: u64,
    #[serde(rename = "createFail")]
    pub create_fail: u64,
    #[serde(rename = "compareAndSwapSuccess")]
    pub compare_and_swap_success: u64,
    #[serde(rename = "compareAndSwapFail")]
    pub compare_and_swap_fail: u64,
    #[serde(rename = "compareAndDeleteSuccess")]
    pub compare_and_delete_success: u64,
    #[serde(rename = "compareAndDeleteFail")]
    pub compare_and_delete_fail: u64,
    #[serde(rename = "expireCount")]
    pub expire_count: u64,
    /// Current number of registered watchers (filled in by `Store::stats`).
    pub watchers: u64,
}

impl StoreStats {
    /// The exact `/v2/stats/store` body (etcd writes no trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        super::json::to_go_json(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_field_names_and_order() {
        let s = StoreStats {
            get_success: 1,
            get_fail: 2,
            set_success: 3,
            watchers: 4,
            ..Default::default()
        };
        assert_eq!(
            String::from_utf8(s.to_json()).unwrap(),
            "{\"getsSuccess\":1,\"getsFail\":2,\"setsSuccess\":3,\"setsFail\":0,\"deleteSuccess\":0,\"deleteFail\":0,\"updateSuccess\":0,\"updateFail\":0,\"createSuccess\":0,\"createFail\":0,\"compareAndSwapSuccess\":0,\"compareAndSwapFail\":0,\"compareAndDeleteSuccess\":0,\"compareAndDeleteFail\":0,\"expireCount\":0,\"watchers\":4}"
        );
    }
}
