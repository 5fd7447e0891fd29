//! The watch caches of the Canaries and of the kinds every Canary has several of (its target and primary,
//! three Services, a route, an autoscaler) keep each object as compressed JSON, and hand out the typed
//! object when it is read.
//!
//! Why: decoded, a one-container Deployment of 1.5 KB of JSON is 7.5 KB of k8s-openapi structs (every
//! optional field of a pod spec has its place), a Canary 6 KB, and a route as a `DynamicObject` ten times
//! its JSON (a map node per key). Ten thousand Canaries' objects were most of the controller's memory. An
//! object is read a few times per tick of its Canary; decoding it then costs microseconds.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};
use tracing::warn;

use super::slim::slim;

/// An object as its JSON text (slimmed: see slim.rs; compressed), with the metadata the watch machinery
/// and the mapping to Canaries read: name, namespace, resourceVersion, generation, its Canary owners.
pub struct Packed<K> {
    meta: ObjectMeta,
    json: Arc<[u8]>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Packed<K> {
    fn clone(&self) -> Self {
        Self {
            meta: self.meta.clone(),
            json: self.json.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> fmt::Debug for Packed<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Packed")
            .field("namespace", &self.meta.namespace)
            .field("name", &self.meta.name)
            .field("resource_version", &self.meta.resource_version)
            .finish()
    }
}

impl<K: Resource> Resource for Packed<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }
    fn api_version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::api_version(dt)
    }
    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

impl<'de, K> Deserialize<'de> for Packed<K>
where
    K: Resource + DeserializeOwned + Serialize,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::pack(K::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

impl<K: Resource + DeserializeOwned + Serialize> Packed<K> {
    /// `object`, slimmed, as its JSON text.
    pub fn pack(mut object: K) -> Result<Self, serde_json::Error> {
        slim(&mut object);
        let json = serde_json::to_vec(&object)?;
        let m = object.meta_mut();
        // What the watch (resourceVersion) and the mapping to Canaries (a Canary owner's name) read; the
        // rest is in the JSON.
        let owners: Vec<OwnerReference> = m
            .owner_references
            .take()
            .into_iter()
            .flatten()
            .filter(|o| o.kind == "Canary")
            .map(|o| OwnerReference {
                uid: String::new(),
                ..o
            })
            .collect();
        let meta = ObjectMeta {
            name: m.name.take(),
            namespace: m.namespace.take(),
            resource_version: m.resource_version.take(),
            generation: m.generation,
            owner_references: (!owners.is_empty()).then_some(owners),
            ..ObjectMeta::default()
        };
        Ok(Self {
            meta,
            json: lz4_flex::compress_prepend_size(&json).into(),
            kind: PhantomData,
        })
    }

    /// The JSON text (kept compressed: a Kubernetes object's JSON repeats its keys and labels).
    fn json(&self) -> Option<Vec<u8>> {
        lz4_flex::decompress_size_prepended(&self.json)
            .inspect_err(|e| warn!(object = ?self, error = %e, "reading a cached object back"))
            .ok()
    }

    /// The typed object. It was written from one, so reading it back does not fail; if it ever did, the
    /// object is treated as not cached (and said in the log).
    pub fn unpack(&self) -> Option<K> {
        self.decode(&self.json()?)
    }

    /// The typed object if its JSON holds `text` as a string value or key, else None: the cheap test
    /// before decoding, for the objects that may name a ConfigMap or Secret (a reference is always
    /// `"name": "<name>"`). The JSON is decompressed once for both.
    pub fn unpack_if_mentions(&self, text: &str) -> Option<K> {
        let quoted = format!("\"{text}\"");
        let json = self.json()?;
        json.windows(quoted.len())
            .any(|w| w == quoted.as_bytes())
            .then(|| self.decode(&json))
            .flatten()
    }

    fn decode(&self, json: &[u8]) -> Option<K> {
        serde_json::from_slice(json)
            .inspect_err(|e| warn!(object = ?self, error = %e, "reading a cached object back"))
            .ok()
    }
}

/// The key of `K`'s packed form in a cache (the same name and namespace).
pub fn packed_ref<K>(key: ObjectRef<K>) -> ObjectRef<Packed<K>>
where
    K: Resource<DynamicType = ()>,
{
    key.into_kind_unchecked(())
}

/// A watch cache of packed objects, read as typed ones.
pub struct Cache<K: Resource + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store: Store<Packed<K>>,
}

impl<K: Resource + 'static> Clone for Cache<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
        }
    }
}

impl<K> Cache<K>
where
    K: Resource + DeserializeOwned + Serialize + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    pub fn new(store: Store<Packed<K>>) -> Self {
        Self { store }
    }

    pub fn get(&self, key: &ObjectRef<Packed<K>>) -> Option<Arc<K>> {
        self.packed(key)?.unpack().map(Arc::new)
    }

    /// The object as kept, without decoding it.
    pub fn packed(&self, key: &ObjectRef<Packed<K>>) -> Option<Arc<Packed<K>>> {
        self.store.get(key)
    }

    pub fn store(&self) -> &Store<Packed<K>> {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::apply::FIELD_MANAGER;
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{ApiResource, DynamicObject};
    use serde_json::{Value, json};

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "podinfo", "namespace": "test", "uid": "u1", "resourceVersion": "7",
                "generation": 3, "labels": {"app": "podinfo"},
                "ownerReferences": [{"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "name": "podinfo", "uid": "c1"}],
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "team": "a"},
                "managedFields": [
                    {"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {}}},
                    {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "podinfo"}},
                "template": {"metadata": {"labels": {"app": "podinfo"}},
                    "spec": {"containers": [{"name": "app", "image": "podinfo:1",
                        "envFrom": [{"configMapRef": {"name": "settings"}}]}]}}},
            "status": {"replicas": 2, "readyReplicas": 1}})
    }

    #[test]
    fn reads_back_the_slimmed_object_and_keeps_the_metadata_the_watch_needs() {
        let text = deployment().to_string();
        let packed: Packed<Deployment> = serde_json::from_str(&text).unwrap();
        let mut want: Deployment = serde_json::from_str(&text).unwrap();
        slim(&mut want);
        assert_eq!(packed.unpack().unwrap(), want);
        let meta = packed.meta();
        assert_eq!(meta.name.as_deref(), Some("podinfo"));
        assert_eq!(meta.namespace.as_deref(), Some("test"));
        assert_eq!(meta.resource_version.as_deref(), Some("7"));
        assert_eq!(meta.generation, Some(3));
        assert_eq!(meta.owner_references.as_ref().unwrap()[0].name, "podinfo");
        assert_eq!(packed.unpack().unwrap().metadata.uid.as_deref(), Some("u1"));
        // Serin's own managedFields are kept, for drops_fields.
        let managed = packed.unpack().unwrap().metadata.managed_fields.unwrap();
        assert_eq!(managed.len(), 1);
        assert_eq!(managed[0].manager.as_deref(), Some(FIELD_MANAGER));
        assert!(packed.unpack_if_mentions("settings").is_some());
        assert!(packed.unpack_if_mentions("setting").is_none());
    }

    #[test]
    fn an_untyped_object_keeps_its_kind_and_fields() {
        let ar = ApiResource::erase::<Deployment>(&());
        let packed: Packed<DynamicObject> =
            serde_json::from_str(&deployment().to_string()).unwrap();
        assert_eq!(Packed::<DynamicObject>::kind(&ar), "Deployment");
        let object = packed.unpack().unwrap();
        assert_eq!(object.data["spec"]["replicas"], 2);
        assert_eq!(
            object.types.unwrap().api_version,
            "apps/v1",
            "apiVersion and kind read back"
        );
    }
}
