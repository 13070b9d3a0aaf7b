"""AdmissionReview v1 parsing is strict: every malformed shape is a ReviewError naming what is wrong."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from kubepci.admission.review import (
    ReviewError,
    encode_response,
    make_review,
    parse_review,
    request_resource,
)
from kubepci.errors import InputError
from tests.unit.admission.platform import one


def _deployment() -> dict[str, Any]:
    return one("Deployment", "payments", "payment-api")


def _body(review: dict[str, Any]) -> bytes:
    return orjson.dumps(review)


def test_valid_review_is_parsed_field_by_field() -> None:
    review = make_review(_deployment(), uid="7b1c-uid", dry_run=True, username="alice")
    review["request"]["userInfo"]["groups"] = ["devs", "system:authenticated"]
    req = parse_review(_body(review))
    assert req.uid == "7b1c-uid"
    assert (req.kind.group, req.kind.version, req.kind.kind) == ("apps", "v1", "Deployment")
    assert req.kind.api_version == "apps/v1"
    assert (req.resource.group, req.resource.resource) == ("apps", "deployments")
    assert (req.namespace, req.name, req.operation) == ("payments", "payment-api", "CREATE")
    assert req.username == "alice"
    assert req.groups == ("devs", "system:authenticated")
    assert req.dry_run is True
    assert req.object is not None
    assert req.object["spec"]["replicas"] == 3
    assert req.old_object is None


def test_request_resource_carries_the_reference_findings_use() -> None:
    req = parse_review(_body(make_review(_deployment())))
    resource = request_resource(req)
    assert resource is not None
    assert str(resource.ref) == "payments/Deployment/payment-api"
    assert resource.ref.api_version == "apps/v1"
    assert resource.location.file == "admission"


def test_generate_name_stands_in_for_a_pending_name() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-", "namespace": "shop"},
           "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    review = make_review(pod)
    review["request"]["name"] = ""
    resource = request_resource(parse_review(_body(review)))
    assert resource is not None
    assert str(resource.ref) == "shop/Pod/web-"


def test_namespace_comes_from_the_request_when_the_object_lacks_it() -> None:
    dep = _deployment()
    del dep["metadata"]["namespace"]
    review = make_review(dep)
    review["request"]["namespace"] = "payments"
    resource = request_resource(parse_review(_body(review)))
    assert resource is not None
    assert resource.namespace == "payments"


def test_delete_reviews_the_old_object() -> None:
    req = parse_review(_body(make_review(_deployment(), operation="DELETE")))
    assert req.object is None
    resource = request_resource(req)
    assert resource is not None
    assert resource.name == "payment-api"


def test_null_dry_run_means_false() -> None:
    review = make_review(_deployment())
    review["request"]["dryRun"] = None
    assert parse_review(_body(review)).dry_run is False


def _mutated(path: tuple[str, ...], value: Any) -> bytes:
    review = make_review(_deployment())
    node = review
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return _body(review)


_DELETE = object()

MALFORMED = [
    pytest.param(b"", "empty body", id="empty"),
    pytest.param(b"{not json", "not valid JSON", id="not-json"),
    pytest.param(b"[1, 2]", "must be a JSON object, got list", id="array"),
    pytest.param(_mutated(("apiVersion",), "admission.k8s.io/v1beta1"), "apiVersion must be", id="v1beta1"),
    pytest.param(_mutated(("kind",), "AdmissionRequest"), "kind must be 'AdmissionReview'", id="kind"),
    pytest.param(_mutated(("request",), _DELETE), "AdmissionReview.request is required", id="no-request"),
    pytest.param(_mutated(("request",), "x"), "AdmissionReview.request must be an object", id="request-str"),
    pytest.param(_mutated(("request", "uid"), _DELETE), "request.uid is required", id="no-uid"),
    pytest.param(_mutated(("request", "uid"), ""), "request.uid must not be empty", id="empty-uid"),
    pytest.param(_mutated(("request", "uid"), 42), "request.uid must be a string, got int", id="int-uid"),
    pytest.param(_mutated(("request", "operation"), "PATCH"), "request.operation must be one of", id="operation"),
    pytest.param(_mutated(("request", "kind"), _DELETE), "request.kind is required", id="no-kind"),
    pytest.param(_mutated(("request", "kind", "kind"), _DELETE), "request.kind.kind is required", id="no-kind-kind"),
    pytest.param(_mutated(("request", "resource", "resource"), 1), "request.resource.resource must be a string",
                 id="resource"),
    pytest.param(_mutated(("request", "object"), [1]), "request.object must be an object, got list", id="object"),
    pytest.param(_mutated(("request", "object"), None), "request.object is required for CREATE", id="no-object"),
    pytest.param(_mutated(("request", "object", "metadata"), "x"), "request.object.metadata must be an object",
                 id="metadata"),
    pytest.param(_mutated(("request", "object", "metadata", "name"), 7), "metadata.name must be a string",
                 id="name"),
    pytest.param(_mutated(("request", "object", "metadata", "labels"), {"a": 1}),
                 "metadata.labels must map strings to strings", id="labels"),
    pytest.param(_mutated(("request", "object", "kind"), "Pod"), "does not match request.kind.kind", id="mismatch"),
    pytest.param(_mutated(("request", "dryRun"), "yes"), "request.dryRun must be a boolean", id="dry-run"),
    pytest.param(_mutated(("request", "userInfo", "groups"), "admins"), "groups must be a list of strings",
                 id="groups"),
]


@pytest.mark.parametrize(("body", "reason"), MALFORMED)
def test_malformed_reviews_raise_a_typed_error_with_the_reason(body: bytes, reason: str) -> None:
    with pytest.raises(ReviewError) as info:
        parse_review(body)
    assert reason in info.value.reason
    assert isinstance(info.value, InputError)  # exit code 3 family: bad input, not a crash


def test_parser_does_not_mutate_or_depend_on_field_order() -> None:
    review = make_review(_deployment())
    before = copy.deepcopy(review)
    reordered = {"request": review["request"], "kind": review["kind"], "apiVersion": review["apiVersion"]}
    assert parse_review(_body(reordered)).uid == parse_review(_body(review)).uid
    assert review == before


def test_denied_response_echoes_uid_and_carries_status_warnings_and_annotations() -> None:
    raw = encode_response("uid-1", False, message="no", warnings=["careful"], audit_annotations={"decision": "denied"})
    doc = orjson.loads(raw)
    assert doc["apiVersion"] == "admission.k8s.io/v1"
    assert doc["kind"] == "AdmissionReview"
    assert doc["response"] == {
        "uid": "uid-1", "allowed": False,
        "status": {"code": 403, "reason": "Forbidden", "message": "no"},
        "warnings": ["careful"], "auditAnnotations": {"decision": "denied"},
    }


def test_allowed_response_has_no_status() -> None:
    doc = orjson.loads(encode_response("uid-2", True))
    assert doc["response"] == {"uid": "uid-2", "allowed": True}
