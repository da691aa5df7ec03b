"""The operator's only writer to the API: idempotent creates and deletes, status patches.

Manifests stay plain dicts end to end (children.py builds them), so this goes through
the official client's DynamicClient rather than the typed models. Deletes use the
Background policy: Foreground would park children behind a finalizer that only the
garbage collector removes."""
from __future__ import annotations

import logging
from typing import Any, Iterable, Optional

from kubernetes import config as kube_config
from kubernetes.client import ApiClient, Configuration
from kubernetes.dynamic import DynamicClient
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import ConflictError, NotFoundError, ResourceNotFoundError

from .crd import API_VERSION, KIND, PLURAL, RAY_GROUP, RAY_VERSION
from .observed import CreateFailure

log = logging.getLogger(__name__)
RAY_API_VERSION = f"{RAY_GROUP}/{RAY_VERSION}"
# (connect, read) seconds for every call: a reconcile holds its job's lock, so a call to an
# apiserver that accepted the connection but never answers (etcd down under it) must end.
REQUEST_TIMEOUT = (5, 30)


def fail_fast_retries() -> Any:
    """urllib3's retries for the operator's client: a refused connection is tried twice more
    at once (a pooled connection dropped by an apiserver restart), and nothing else is retried
    here. urllib3's default would also sleep out a 503's Retry-After (10 s while an apiserver
    starts, three times over) and repeat a read timeout: a reconcile holding its job's lock
    would then stand for up to a minute after the apiserver is back. A failed call fails the
    reconcile instead, and kopf runs it again one --interval later."""
    from urllib3.util.retry import Retry

    return Retry(total=2, connect=2, read=0, redirect=0, status=0, other=0,
                 respect_retry_after_header=False, raise_on_status=False)


class APIUnavailable(RuntimeError):
    """The apiserver cannot answer for this job right now: a 404 for a whole API path (a
    CRD not served yet, as for a few seconds after an apiserver restart), not for one
    object. Transient: the reconcile is retried, and nothing is decided on a missing read."""


def object_missing(err: ApiException) -> bool:
    """A 404 about one object (a Status with reason NotFound), as opposed to a 404 for a
    path nobody serves ("404 page not found"), which says nothing about the object."""
    import json
    try:
        body = json.loads(err.body)
    except (TypeError, ValueError):
        return False
    return isinstance(body, dict) and body.get("kind") == "Status" and body.get("reason") == "NotFound"


def _not_served(err: ApiException, what: str) -> APIUnavailable:
    return APIUnavailable(f"{what}: the apiserver answered 404 for the API path itself ({_api_message(err)}); "
                          "its API is not served yet (an apiserver restart), retrying")


def api_client() -> ApiClient:
    """In-cluster credentials when running in a pod, else KUBECONFIG / ~/.kube/config; the
    calls fail fast while the apiserver is away (fail_fast_retries)."""
    configuration = Configuration()
    try:
        kube_config.load_incluster_config(client_configuration=configuration)
    except kube_config.ConfigException:
        kube_config.load_kube_config(client_configuration=configuration)
    configuration.retries = fail_fast_retries()
    return ApiClient(configuration)


def unreachable(err: BaseException) -> bool:
    """The apiserver could not be reached or could not answer (refused, timed out, reset,
    a 5xx or 429): transient, nothing learnt about the job. The reconcile is retried."""
    from urllib3.exceptions import HTTPError

    if isinstance(err, HTTPError):
        return True
    return isinstance(err, ApiException) and (err.status in (0, 429) or (err.status or 0) >= 500)


class JobGone(RuntimeError):
    """The DataJuicerJob itself no longer exists: there is nothing left to reconcile."""


class Kube:
    def __init__(self, client: ApiClient) -> None:
        self.dyn = DynamicClient(client)

    def _resource(self, api_version: str, kind: str):
        return self.dyn.resources.get(api_version=api_version, kind=kind)

    # -- reads --------------------------------------------------------------------

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Optional[dict[str, Any]]:
        """The object as a dict, or None if it (or its kind, e.g. KubeRay's CRD) does not exist."""
        try:
            return self._resource(api_version, kind).get(name=name, namespace=namespace,
                                                         _request_timeout=REQUEST_TIMEOUT).to_dict()
        except ResourceNotFoundError:
            return None
        except NotFoundError as err:
            if object_missing(err):
                return None
            raise _not_served(err, f"get {kind} {namespace}/{name}") from err

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        try:
            found = self._resource(api_version, kind).get(namespace=namespace, label_selector=selector,
                                                          _request_timeout=REQUEST_TIMEOUT)
        except ResourceNotFoundError:
            return []
        return [item.to_dict() for item in found.items]

    def pod_warnings(self, namespace: str, pod: str) -> list[str]:
        """The pod's Warning events as "Reason: message", oldest first."""
        try:
            found = self._resource("v1", "Event").get(
                namespace=namespace, field_selector=f"involvedObject.kind=Pod,involvedObject.name={pod},type=Warning",
                _request_timeout=REQUEST_TIMEOUT)
        except (NotFoundError, ResourceNotFoundError):
            return []
        except ApiException as err:
            if err.status != 403:
                raise
            log.warning("cannot list events in %s (grant list on events): stuck pods are reported less precisely",
                        namespace)
            return []
        items = sorted((e.to_dict() for e in found.items),
                       key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        return [f"{e.get('reason')}: {e.get('message') or ''}" for e in items]

    def job_api_served(self) -> bool:
        """Whether the apiserver serves the DataJuicerJob API right now (its discovery
        document lists the resource), asked directly, past the client's discovery cache."""
        try:
            found = self.dyn.request("get", f"/apis/{API_VERSION}", _request_timeout=REQUEST_TIMEOUT)
        except Exception:  # noqa: BLE001 - not served, or not reachable: either way, no
            return False
        return any(r.get("name") == PLURAL for r in (found.to_dict().get("resources") or []))

    def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        """The DataJuicerJob as stored now. Raises JobGone if it was deleted, and
        APIUnavailable if its API is not served at the moment (its CRD is never optional)."""
        try:
            self._resource(API_VERSION, KIND)
        except ResourceNotFoundError as err:
            raise APIUnavailable(f"get {KIND} {namespace}/{name}: {API_VERSION} is not in the apiserver's "
                                 "discovery (an apiserver restart, or the CRD was removed), retrying") from err
        job = self.get(API_VERSION, KIND, namespace, name)
        if job is None:
            raise JobGone(f"{KIND} {namespace}/{name} is gone")
        return job

    # -- writes -------------------------------------------------------------------

    def create(self, manifest: dict[str, Any]) -> Optional[CreateFailure]:
        """Creates the object; one that exists already is left alone, except a ConfigMap,
        whose data is brought up to date (the recipe may change between attempts).

        A refusal that retrying will not fix by itself (400, 403 quota or admission, 422
        invalid) is returned for the status instead of raised: kopf would retry it blindly."""
        meta = manifest["metadata"]
        try:
            resource = self._resource(manifest["apiVersion"], manifest["kind"])
        except ResourceNotFoundError as err:
            raise RuntimeError(f"cannot create {manifest['kind']} {meta['namespace']}/{meta['name']}: the API "
                               f"{manifest['apiVersion']} is not served; install its CRD (KubeRay for RayCluster)") from err
        try:
            resource.create(body=manifest, namespace=meta["namespace"], _request_timeout=REQUEST_TIMEOUT)
            log.info("created %s %s/%s", manifest["kind"], meta["namespace"], meta["name"])
        except ConflictError:
            if manifest["kind"] == "ConfigMap":
                resource.patch(body={"data": manifest.get("data", {})}, name=meta["name"],
                               namespace=meta["namespace"], content_type="application/merge-patch+json",
                               _request_timeout=REQUEST_TIMEOUT)
        except NotFoundError as err:  # a create never finds "no such object": the path is not served
            raise _not_served(err, f"create {manifest['kind']} {meta['namespace']}/{meta['name']}") from err
        except ApiException as err:
            if err.status not in (400, 403, 422):
                raise
            return CreateFailure(manifest["kind"], meta["name"], int(err.status), _api_message(err))
        return None

    def delete(self, ref: dict[str, Any]) -> None:
        """Asks for deletion (pods get their grace period unless the ref carries
        gracePeriodSeconds); a missing object is fine."""
        options: dict[str, Any] = {"propagationPolicy": "Background"}
        if "gracePeriodSeconds" in ref:
            options["gracePeriodSeconds"] = ref["gracePeriodSeconds"]
        try:
            self._resource(ref["apiVersion"], ref["kind"]).delete(
                name=ref["name"], namespace=ref["namespace"], body=options, _request_timeout=REQUEST_TIMEOUT)
            log.info("deleting %s %s/%s", ref["kind"], ref["namespace"], ref["name"])
        except ResourceNotFoundError:
            pass
        except NotFoundError as err:
            if not object_missing(err):
                raise _not_served(err, f"delete {ref['kind']} {ref['namespace']}/{ref['name']}") from err

    def apply(self, create: Iterable[dict[str, Any]], delete: Iterable[dict[str, Any]]) -> list[CreateFailure]:
        """Deletes first (a stop must not wait behind creates), then creates in the given
        order, stopping at the first refused create (later ones depend on it)."""
        for ref in delete:
            self.delete(ref)
        for manifest in create:
            failure = self.create(manifest)
            if failure is not None:
                return [failure]
        return []

    def patch_job_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        if not patch:
            return
        resource = self._resource(API_VERSION, KIND)
        try:
            resource.status.patch(body={"status": patch}, name=name, namespace=namespace,
                                  content_type="application/merge-patch+json", _request_timeout=REQUEST_TIMEOUT)
        except NotFoundError as err:
            # Deleted meanwhile, or not served: either way the children this status names must
            # not be created after it, so this reconcile ends here.
            if object_missing(err):
                raise JobGone(f"{KIND} {namespace}/{name} is gone") from err
            raise _not_served(err, f"patch the status of {KIND} {namespace}/{name}") from err


def _api_message(err: ApiException) -> str:
    """The apiserver's own explanation (a Status object's message), else the HTTP reason."""
    import json
    try:
        return str(json.loads(err.body).get("message") or err.reason)
    except (TypeError, ValueError, AttributeError):
        return str(err.reason)


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch from old to new: removed keys become null; lists are replaced."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            sub = status_patch(before, value)
            if sub:
                patch[key] = sub
        elif value != before:
            patch[key] = value
    return patch
