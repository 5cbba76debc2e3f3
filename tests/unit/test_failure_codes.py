"""One failure vocabulary: FailureCode and its helpers in drivers/base.py, the list in the uplink schema
doc, the BACnet mapping, and no free-string codes in the drivers or the actuator."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from bacpypes3.apdu import AbortPDU, AbortReason, ChangeListError, Error, RejectPDU, RejectReason
from bacpypes3.basetypes import ErrorClass, ErrorCode, ErrorType
from hypothesis import given
from hypothesis import strategies as st

from drivers.bacnet.errors import error_code, request_error
from drivers.base import (
    BACNET_ERROR_CLASSES,
    DeviceRejectedError,
    DriverError,
    FailureCode,
    PermanentError,
    TransientError,
    WriteResult,
    bacnet_error,
    is_failure_code,
    modbus_exception,
)

ROOT = Path(__file__).resolve().parents[2]
PARAMETERISED = {"modbus:<n>", "bacnet:<class>:<code>"}


def _names(enum: type) -> list[str]:
    """The member names of a bacpypes3 enumeration (its class attributes that are ints)."""
    return [k for k, v in vars(enum).items() if not k.startswith("_") and isinstance(v, int)]


# ---- the vocabulary and its documentation ----------------------------------------------------------


def test_the_schema_doc_lists_exactly_the_vocabulary() -> None:
    text = (ROOT / "docs" / "uplink-schema.md").read_text(encoding="utf-8")
    section = text.split("\n## Failure codes\n", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)
    assert len(listed) == len(set(listed)), "a code is listed twice"
    assert set(listed) == {c.value for c in FailureCode} | PARAMETERISED


def test_one_spelling_per_code() -> None:
    assert len(FailureCode.__members__) == len(list(FailureCode))  # no aliases
    for code in FailureCode:
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", code.value), code
        assert code.name.lower() == code.value
        assert is_failure_code(code) and is_failure_code(code.value)


@pytest.mark.parametrize(
    "old",
    [
        "not-writable",
        "readback-mismatch",
        "masked:priority-8",
        "bacnet:fault",
        "bacnet:out-of-service",
        "bacnet:request-failed",
        "bacnet:bad-value",
        "bacnet:bad-priority",
        "bacnet:relinquish-failed",
        "bacnet:decode:invalid-response",
        "bacnet:decode:missing-result",
        "bacnet:error:ErrorRejectAbortNack",
        "bacnet:local-port-in-use",
        "error:RuntimeError",
        "modbus:0",
        "modbus:256",
        "modbus:02",
        "Timeout",
        " timeout",
        "",
    ],
)
def test_old_and_malformed_spellings_are_not_codes(old: str) -> None:
    assert not is_failure_code(old)


def test_non_strings_are_not_codes() -> None:
    assert not is_failure_code(None) and not is_failure_code(2) and not is_failure_code(b"timeout")


# ---- helpers ---------------------------------------------------------------------------------------


def test_modbus_exception_codes() -> None:
    assert modbus_exception(2) == "modbus:2" and modbus_exception(255) == "modbus:255"
    assert all(is_failure_code(modbus_exception(n)) for n in range(1, 256))
    for bad in (0, 256, -1, True):
        with pytest.raises(ValueError):
            modbus_exception(bad)


@pytest.mark.parametrize(
    ("cls", "code", "expected"),
    [
        ("object", "unknown-object", "bacnet:object:unknown-object"),
        ("object", "unknownObject", "bacnet:object:unknown-object"),
        ("Property", "value_out_of_range", "bacnet:property:value-out-of-range"),
        ("reject", "unrecognizedService", "bacnet:reject:unrecognized-service"),
        ("abort", "segmentation-not-supported", "bacnet:abort:segmentation-not-supported"),
        (70, 1000, "bacnet:70:1000"),  # proprietary class and code
    ],
)
def test_bacnet_error_spells_names_one_way(cls: object, code: object, expected: str) -> None:
    assert bacnet_error(cls, code) == expected
    assert is_failure_code(expected)


@pytest.mark.parametrize(("cls", "code"), [("decode", "x"), (None, "x"), ("object", None), ("object", "")])
def test_bacnet_error_refuses_what_is_not_a_bacnet_error(cls: object, code: object) -> None:
    with pytest.raises(ValueError):
        bacnet_error(cls, code)


def test_every_bacnet_error_reject_and_abort_is_a_code() -> None:
    classes = _names(ErrorClass)
    assert set(classes) == BACNET_ERROR_CLASSES
    codes = [bacnet_error(c, e) for c in classes for e in _names(ErrorCode)]
    codes += [bacnet_error("reject", r) for r in _names(RejectReason)]
    codes += [bacnet_error("abort", r) for r in _names(AbortReason)]
    assert all(map(is_failure_code, codes))
    assert len(set(codes)) == len(codes)  # no two names collapse into one spelling


@given(
    st.sampled_from(sorted(BACNET_ERROR_CLASSES | {"reject", "abort"})),
    st.from_regex(r"[A-Za-z][A-Za-z0-9_ -]{0,30}", fullmatch=True),
)
def test_bacnet_error_is_valid_and_idempotent(cls: str, code: str) -> None:
    out = bacnet_error(cls, code)
    assert is_failure_code(out)
    _, c, e = out.split(":")
    assert bacnet_error(c, e) == out


@given(st.text(max_size=40))
def test_is_failure_code_is_total(text: str) -> None:
    result = is_failure_code(text)
    assert isinstance(result, bool)
    if result:
        assert text == text.strip().lower() and " " not in text


def test_results_and_errors_refuse_codes_outside_the_vocabulary() -> None:
    with pytest.raises(ValueError):
        WriteResult("p", 1, None, False, "not-writable")
    with pytest.raises(ValueError):
        DriverError("x", device="d", code="masked:priority-8")
    assert WriteResult("p", 1, 2, False, FailureCode.MASKED, holding_priority=8).holding_priority == 8
    assert WriteResult("p", 1, None, False, "modbus:2").code == "modbus:2"


# ---- BACnet replies -> codes -----------------------------------------------------------------------


def test_bacnet_replies_map_to_codes() -> None:
    err = Error(errorClass="object", errorCode="unknownObject", service_choice=12)
    assert error_code(err) == "bacnet:object:unknown-object"
    assert error_code(RejectPDU(reason="unrecognizedService")) == "bacnet:reject:unrecognized-service"
    assert error_code(AbortPDU(reason="bufferOverflow")) == "bacnet:abort:buffer-overflow"
    nested = ChangeListError(
        errorType=ErrorType(errorClass="property", errorCode="writeAccessDenied"),
        firstFailedElementNumber=1,
        service_choice=8,
    )
    assert error_code(nested) == "bacnet:property:write-access-denied"


def _request_error(exc: BaseException) -> DriverError:
    return request_error(exc, device="d", what="read-property to x", timeout_s=2.0)


def test_request_errors_separate_transient_from_permanent() -> None:
    t = _request_error(TimeoutError())
    assert isinstance(t, TransientError) and t.code == "timeout" and t.device == "d"
    r = _request_error(Error(errorClass="property", errorCode="unknownProperty", service_choice=12))
    assert isinstance(r, DeviceRejectedError) and isinstance(r, PermanentError)
    assert r.code == "bacnet:property:unknown-property" and "property:unknown-property" in str(r)
    f = _request_error(RuntimeError("stack closed"))
    assert type(f) is PermanentError and f.code == "request_failed"


# ---- no free strings where a code goes -------------------------------------------------------------

SCANNED = [*sorted((ROOT / "drivers").rglob("*.py")), ROOT / "edge_agent" / "enforce" / "actuator.py"]
# callee -> index of its positional code argument (a keyword ``code=`` counts for every callee)
CODE_ARG = {
    "Reading": 4,
    "WriteResult": 4,
    "ActuationOutcome": 2,
    "_Refusal": 0,
    "_CodecFailure": 0,
    "_fill": 3,
    "_bad": 1,
    "_state_change": 0,
}
NOT_FAILURES = {"ok", "relinquished"}  # audit results that are not failure codes


def _free_string(node: ast.AST) -> bool:
    """A code spelled in place: a str literal, an f-string, or an expression built from them."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp):
        return _free_string(node.left) or _free_string(node.right)
    if isinstance(node, ast.IfExp):
        return _free_string(node.body) or _free_string(node.orelse)
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_free_string(e) for e in node.elts)
    return False


def _is_code(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "code") or (
        isinstance(node, ast.Name) and node.id == "code"
    )


def _violations(source: str, where: str) -> list[str]:
    out: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            args = [kw.value for kw in node.keywords if kw.arg == "code"]
            if name in CODE_ARG and len(node.args) > CODE_ARG[name]:
                args.append(node.args[CODE_ARG[name]])
            args += [
                kw.value
                for kw in node.keywords
                if kw.arg == "result"
                and _free_string(kw.value)
                and not (isinstance(kw.value, ast.Constant) and kw.value.value in NOT_FAILURES)
            ]
            out += [
                f"{where}:{a.lineno} {name}(...) gets code {ast.unparse(a)}" for a in args if _free_string(a)
            ]
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(map(_is_code, sides)) and any(map(_free_string, sides)):
                out.append(f"{where}:{node.lineno} compares a code with a literal: {ast.unparse(node)}")
    return out


def test_no_code_is_a_free_string() -> None:
    """Codes come from FailureCode, modbus_exception() or bacnet_error(), never a literal: a literal is
    how `not-writable` and `not_writable` both came to exist, and how the actuator missed one."""
    found = [
        v
        for path in SCANNED
        for v in _violations(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert not found, "\n".join(found)


def test_the_scan_catches_free_strings() -> None:
    sample = (
        'WriteResult(p, v, None, False, "not-writable")\n'
        'Reading(p, None, ts, q, f"modbus:{n}")\n'
        'raise PermanentError("x", device=d, code="bacnet:decode:x")\n'
        'audit.append(kind, result="masked:priority-" + str(n))\n'
        'if f.code == "timeout": pass\n'
        'ok = wr.code in (None, "readback_mismatch")\n'
        'fine = WriteResult(p, v, None, False, FailureCode.MASKED); audit.append(kind, result="ok")\n'
    )
    assert len(_violations(sample, "sample")) == 6
