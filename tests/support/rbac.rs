//! RBAC as the API server applies it, from the manifests of `deploy/`: the rules of every Role and
//! ClusterRole bound to spillway's ServiceAccount (RoleBindings grant only in their namespace).

use serde_json::Value;

#[derive(Clone, Debug)]
struct Grant {
    namespace: Option<String>,
    api_groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    resource_names: Vec<String>,
}

/// A request as RBAC sees it; `resource` includes the subresource (`pods/eviction`).
pub struct Attributes {
    pub group: String,
    pub resource: String,
    pub verb: String,
    pub ns: Option<String>,
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Rbac {
    grants: Vec<Grant>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

impl Rbac {
    /// From a multi-document YAML (e.g. `kubectl kustomize deploy/`), for `namespace/name`.
    pub fn from_manifests(yaml: &str, sa_namespace: &str, sa_name: &str) -> Self {
        let docs: Vec<Value> = yaml
            .split("\n---")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_saphyr::from_str::<Value>(d).unwrap())
            .collect();
        let find_role = |kind: &str, name: &str, ns: Option<&str>| {
            docs.iter().find(|d| {
                d["kind"] == kind
                    && d["metadata"]["name"] == name
                    && (ns.is_none() || d["metadata"]["namespace"].as_str() == ns)
            })
        };
        let mut grants = vec![];
        for b in docs
            .iter()
            .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
        {
            let bound = b["subjects"].as_array().into_iter().flatten().any(|s| {
                s["kind"] == "ServiceAccount"
                    && s["name"] == sa_name
                    && s["namespace"] == sa_namespace
            });
            if !bound {
                continue;
            }
            let scope = (b["kind"] == "RoleBinding")
                .then(|| b["metadata"]["namespace"].as_str().unwrap().to_string());
            let role_kind = b["roleRef"]["kind"].as_str().unwrap();
            let role_name = b["roleRef"]["name"].as_str().unwrap();
            let role = if role_kind == "Role" {
                find_role("Role", role_name, scope.as_deref())
            } else {
                find_role("ClusterRole", role_name, None)
            };
            let role =
                role.unwrap_or_else(|| panic!("{role_kind} {role_name} is bound but not defined"));
            for r in role["rules"].as_array().into_iter().flatten() {
                grants.push(Grant {
                    namespace: scope.clone(),
                    api_groups: strings(&r["apiGroups"]),
                    resources: strings(&r["resources"]),
                    verbs: strings(&r["verbs"]),
                    resource_names: strings(&r["resourceNames"]),
                });
            }
        }
        assert!(
            !grants.is_empty(),
            "no role is bound to {sa_namespace}/{sa_name}"
        );
        Self { grants }
    }

    /// Whether the request is allowed; `resource` includes the subresource (`pods/eviction`).
    pub fn allows(
        &self,
        group: &str,
        resource: &str,
        verb: &str,
        ns: Option<&str>,
        name: Option<&str>,
    ) -> bool {
        self.grants.iter().any(|g| {
            g.namespace.as_deref().is_none_or(|gns| ns == Some(gns))
                && g.api_groups.iter().any(|x| x == group || x == "*")
                && g.resources.iter().any(|x| x == resource || x == "*")
                && g.verbs.iter().any(|x| x == verb || x == "*")
                && (g.resource_names.is_empty()
                    || name.is_some_and(|n| g.resource_names.iter().any(|x| x == n)))
        })
    }

    /// How the API server names a request: (group, resource[/sub], verb, namespace, name).
    pub fn attributes(method: &str, path: &str, watch: bool) -> Option<Attributes> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, rest) = match parts.as_slice() {
            ["api", "v1", rest @ ..] => ("", rest),
            ["apis", group, _v, rest @ ..] => (*group, rest),
            _ => return None,
        };
        let (ns, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
            r => (None, r),
        };
        let resource = rest.first()?.to_string();
        let name = rest.get(1).map(|s| s.to_string());
        let resource = match rest.get(2) {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource,
        };
        let verb = match (method, name.is_some()) {
            ("GET", true) => "get",
            ("GET", false) if watch => "watch",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PATCH", _) => "patch",
            ("PUT", _) => "update",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            _ => return None,
        };
        Some(Attributes {
            group: group.to_string(),
            resource,
            verb: verb.to_string(),
            ns,
            name,
        })
    }
}
