"""The object semantics of the simulated API server, over the real etcd (`etcdstore.EtcdStore`).

What the real kube-apiserver's generic registry does and this simulates:
- objects are JSON under `Resource.key()`; the stored value has no `metadata.resourceVersion`,
  every read sets it to the key's etcd `mod_revision`; lists carry the store's revision;
- create fills `uid`, `creationTimestamp` (both kept when given: see `create`),
  `generation: 1`, the namespace from the URL, `generateName`; it refuses a set
  `resourceVersion`, a missing namespace (NamespaceLifecycle) and an existing name;
- update (PUT) with a `resourceVersion` is a compare-and-swap on `mod_revision` (409 when
  stale, never retried); without one it is unconditional; a write that changes nothing is
  skipped, as on a real server; `generation` is bumped when anything but metadata and status
  changes;
- kinds with a `status` subresource keep `.status` on writes to the main resource and change
  only `.status` through `/status`; CSR `/approval` changes only `status.conditions` (these
  per-object rules are pure functions in `apiobjects`);
- patches are applied to the latest object and retried on a write conflict, unless the patch
  itself names a `resourceVersion`;
- delete honours `preconditions` (resourceVersion, uid) and finalizers (an object with
  finalizers gets `deletionTimestamp` and goes away when the last finalizer is removed);
  deleting a namespace deletes every namespaced object in it first.

Simplified: no system namespaces are created at start (the seed creates `default` and
`kube-system`), no admission beyond the namespace check, no validation beyond names and kinds, no
managedFields, no graceful pod deletion (pods go at once), namespace deletion ignores the
finalizers of the objects inside.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import secrets
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from etcdguard_sim.api import errors as apierrors
from etcdguard_sim.api import etcdstore, patching, resources, selectors
from etcdguard_sim.api import objects as apiobjects

__all__ = ["Clock", "Storage"]

Clock = Callable[[], dt.datetime]
T = TypeVar("T")

# A real server retries a conflicting patch until it wins; each round one writer wins.
_PATCH_RETRIES = 64
_NAMESPACES = resources.find("", "v1", "namespaces")
assert _NAMESPACES is not None
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _decode(kv: etcdstore.KV) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(kv.value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
    return obj


class Storage:
    """Kubernetes object semantics for one API server; errors are `apierrors.ApiError`."""

    def __init__(self, store: etcdstore.EtcdStore, *, clock: Clock | None = None) -> None:
        self.store = store
        self.clock: Clock = clock or _utcnow

    async def _etcd(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except etcdstore.Unavailable as exc:
            raise apierrors.unavailable(str(exc)) from exc

    # ---- reads -------------------------------------------------------------------------
    async def revision(self) -> int:
        """The store's current revision (503 when etcd does not answer)."""
        return await self._etcd(self.store.revision())

    async def get(self, res: resources.Resource, namespace: str | None, name: str) -> dict[str, Any]:
        kv = await self._etcd(self.store.get(res.key(namespace, name)))
        if kv is None:
            raise apierrors.not_found(res, name)
        return _decode(kv)

    async def list(
        self,
        res: resources.Resource,
        namespace: str | None,
        *,
        labels: selectors.LabelSelector | None = None,
        fields: selectors.FieldSelector | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Matching objects, sorted by namespace and name, and the store's revision."""
        kvs, revision = await self._etcd(self.store.list(res.prefix(namespace)))
        items = []
        for kv in kvs:
            try:
                obj = _decode(kv)
            except ValueError:
                continue  # not an object of ours: skip it as the real server logs and skips
            meta = obj.get("metadata", {})
            if labels is not None and not labels.matches(meta.get("labels")):
                continue
            if fields is not None and not fields.matches(obj):
                continue
            items.append(obj)
        return items, revision

    # ---- create ------------------------------------------------------------------------
    async def create(
        self, res: resources.Resource, namespace: str | None, body: Any, *, dry_run: bool = False
    ) -> dict[str, Any]:
        meta_in = body.get("metadata") if isinstance(body, dict) else None
        shown = str((meta_in or {}).get("name") or "")
        obj = apiobjects.check_type(res, body, shown)
        meta = obj["metadata"]
        if res.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise apierrors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
            if not dry_run:
                await self._namespace_exists(namespace or "")
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise apierrors.internal("resourceVersion should not be set on objects to be created")
        generate = meta.get("generateName") if not meta.get("name") else None
        if not meta.get("name") and not generate:
            raise apierrors.invalid(
                res, "", field="metadata.name", cause="FieldValueRequired",
                detail="Required value: name or generateName is required",
            )  # fmt: skip
        # Simplified: a uid or creationTimestamp given on create is kept (the seed writes a
        # cluster installed days ago); a real server always overwrites both.
        meta["uid"] = meta.get("uid") or str(uuid.uuid4())
        meta["creationTimestamp"] = meta.get("creationTimestamp") or apiobjects.rfc3339(self.clock())
        meta["generation"] = 1
        for field in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "managedFields"):
            meta.pop(field, None)
        apiobjects.prepare_create(res, obj)
        for _attempt in range(5 if generate else 1):
            if generate:
                meta["name"] = str(generate) + "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(5))
            apiobjects.validate_name(res, meta["name"])
            if dry_run:
                return obj
            try:
                revision = await self._etcd(
                    self.store.create(res.key(namespace, meta["name"]), apiobjects.encode(obj))
                )
            except etcdstore.AlreadyExists:
                continue
            meta["resourceVersion"] = str(revision)
            return obj
        raise apierrors.already_exists(res, meta["name"])

    async def _namespace_exists(self, namespace: str) -> None:
        assert _NAMESPACES is not None
        if await self._etcd(self.store.get(_NAMESPACES.key(None, namespace))) is None:
            raise apierrors.not_found(_NAMESPACES, namespace)

    # ---- update / patch / delete ---------------------------------------------------------
    async def _write(
        self,
        res: resources.Resource,
        namespace: str | None,
        name: str,
        mutate: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        retry: bool,
        dry_run: bool,
    ) -> dict[str, Any]:
        """Read, mutate, compare-and-swap; `mutate` may raise. Retries conflicts if `retry`."""
        key = res.key(namespace, name)
        for _attempt in range(_PATCH_RETRIES if retry else 1):
            old = await self.get(res, namespace, name)
            rv = old["metadata"]["resourceVersion"]
            new = mutate(copy.deepcopy(old))
            new["metadata"]["resourceVersion"] = rv
            if apiobjects.same(new, old) or dry_run:
                return new
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                try:  # the last finalizer is gone: the object goes away
                    await self._etcd(self.store.delete(key, expected_mod_revision=int(rv)))
                except etcdstore.Conflict:
                    continue
                except etcdstore.NotFound as exc:
                    raise apierrors.not_found(res, name) from exc
                return new
            try:
                revision = await self._etcd(
                    self.store.update(key, apiobjects.encode(new), expected_mod_revision=int(rv))
                )
            except etcdstore.Conflict:
                continue
            except etcdstore.NotFound as exc:
                raise apierrors.not_found(res, name) from exc
            new["metadata"]["resourceVersion"] = str(revision)
            return new
        raise apierrors.conflict(res, name)

    def _precondition(self, res: resources.Resource, name: str, given: Any, current: dict[str, Any]) -> None:
        if given not in (None, "") and str(given) != current["metadata"]["resourceVersion"]:
            raise apierrors.conflict(res, name)

    async def update(
        self,
        res: resources.Resource,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """PUT: 409 when `metadata.resourceVersion` is given and stale (no retry)."""
        if not isinstance(body, dict):
            raise apierrors.bad_request(f"the request body must be a JSON object describing a {res.kind}")
        given = (body.get("metadata") or {}).get("resourceVersion")

        def mutate(old: dict[str, Any]) -> dict[str, Any]:
            self._precondition(res, name, given, old)
            return apiobjects.prepare_update(res, old, body, subresource=subresource, now=self.clock())

        return await self._write(res, namespace, name, mutate, retry=not given, dry_run=dry_run)

    async def patch(
        self,
        res: resources.Resource,
        namespace: str | None,
        name: str,
        content_type: str,
        raw: bytes,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """PATCH: applied to the latest object, retried on conflicts unless it names a version."""

        def mutate(old: dict[str, Any]) -> dict[str, Any]:
            try:
                patched = patching.apply_patch(content_type, old, raw)
            except patching.PatchError as exc:
                if exc.code == 422:
                    raise apierrors.ApiError(422, "Invalid", str(exc), details={}) from exc
                raise apierrors.bad_request(str(exc)) from exc
            if not isinstance(patched, dict):
                raise apierrors.bad_request("the patched object is not a JSON object")
            given = (patched.get("metadata") or {}).get("resourceVersion")
            self._precondition(res, name, given, old)
            return apiobjects.prepare_update(res, old, patched, subresource=subresource, now=self.clock())

        return await self._write(res, namespace, name, mutate, retry=True, dry_run=dry_run)

    # ---- delete ------------------------------------------------------------------------
    async def delete(
        self,
        res: resources.Resource,
        namespace: str | None,
        name: str,
        *,
        preconditions: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Delete one object; returns it as it was (with `deletionTimestamp` set)."""
        pre = preconditions or {}
        key = res.key(namespace, name)
        for _attempt in range(_PATCH_RETRIES):
            obj = await self.get(res, namespace, name)
            meta = obj["metadata"]
            if pre.get("uid") and pre["uid"] != meta.get("uid"):
                raise apierrors.conflict(
                    res,
                    name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, "
                    f"UID in object meta: {meta.get('uid')}",
                )
            if pre.get("resourceVersion") and str(pre["resourceVersion"]) != meta["resourceVersion"]:
                raise apierrors.conflict(
                    res, name,
                    f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                    f"ResourceVersion in object meta: {meta['resourceVersion']}",
                )  # fmt: skip
            meta.setdefault("deletionTimestamp", apiobjects.rfc3339(self.clock()))
            meta.setdefault("deletionGracePeriodSeconds", 0)
            if dry_run:
                return obj
            if meta.get("finalizers"):
                try:
                    revision = await self._etcd(
                        self.store.update(
                            key, apiobjects.encode(obj), expected_mod_revision=int(meta["resourceVersion"])
                        )
                    )
                except etcdstore.Conflict:
                    continue
                meta["resourceVersion"] = str(revision)
                return obj
            if res.plural == "namespaces":
                await self._delete_namespace_contents(name)
                obj.setdefault("status", {})["phase"] = "Terminating"
            try:
                await self._etcd(self.store.delete(key, expected_mod_revision=int(meta["resourceVersion"])))
            except etcdstore.Conflict:
                continue
            except etcdstore.NotFound as exc:
                raise apierrors.not_found(res, name) from exc
            return obj
        raise apierrors.conflict(res, name)

    async def _delete_namespace_contents(self, namespace: str) -> None:
        """The namespace controller, simplified: everything in the namespace goes at once."""
        for res in resources.REGISTRY:
            if not res.namespaced:
                continue
            kvs, _ = await self._etcd(self.store.list(res.prefix(namespace)))
            for kv in kvs:
                with contextlib.suppress(etcdstore.NotFound):
                    await self._etcd(self.store.delete(kv.key))
