"""The numba-IR walk behind ``analyze_kernel``: per-function grid positions, subscripts and writes."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

_DIMS = "xyz"

# A dependence: a frozenset of atoms, or a tuple of dependences (a tuple value whose
# elements are known, e.g. the result of cuda.grid(2)). Atoms: ("pos", d) = a position
# along grid dimension d; ("arg", i) = the value of parameter i (inside device functions).
_EMPTY: frozenset = frozenset()


#: Expression kinds whose value is new (a number, a flag): it refers to no array it was computed from.
_FRESH = frozenset({"binop", "inplace_binop", "unary", "pair_second", "null", "undef", "dummy"})


@dataclass
class _Summary:
    """A function's facts, with parameters left symbolic (``("arg", i)`` atoms)."""

    ret: Any  # dependence of the return value
    dims_used: set[int]
    sources: set[str]
    written: set[int]  # parameters it may write
    shared: list[str]  # shapes of static shared arrays allocated
    # (parameter index, index-tuple length, position, dependence of that index)
    subscripts: list[tuple[int, int, int, frozenset]]
    problems: list[str]
    #: subscripts with a grid position on memory of an array argument reached other than by the
    #: parameter itself (out[row][col], r = out[row]; r[col], an array in a tuple): which axis the
    #: position indexes is unknown, so an N-D launch cannot be sized from shapes (a problem there)
    unattributed: list[str] = field(default_factory=list)


class _Analyzer:
    def __init__(self, summaries: dict[int, _Summary | None]) -> None:
        self.summaries = summaries  # id(py_func) -> summary (None while in progress)
        self._cuda = _cuda_objects()

    def summarize(self, func: Any) -> _Summary:
        key = id(func)
        if key in self.summaries:
            s = self.summaries[key]
            if s is None:  # recursion: the in-progress function contributes nothing more
                return _Summary(_EMPTY, set(), set(), set(), [], [], [])
            return s
        self.summaries[key] = None
        try:
            from numba.core.compiler import run_frontend

            ir = run_frontend(func)
        except Exception as exc:  # noqa: BLE001 - any frontend failure means "cannot see"
            s = _Summary(_EMPTY, set(), set(), set(range(getattr(getattr(func, '__code__', None), 'co_argcount', 0))), [], [], [f"cannot read {getattr(func, '__name__', func)!r}: {type(exc).__name__}: {exc}"])
        else:
            s = _FunctionAnalysis(self, ir).run()
        self.summaries[key] = s
        return s


def _cuda_objects() -> dict[str, Any]:
    from numba import cuda

    out = {}
    for name in _CUDA_NAMES:
        obj = getattr(cuda, name, None)
        if obj is not None:
            out[name] = obj
    return out


_UNRESOLVED = object()
_CUDA_NAMES = ("threadIdx", "blockIdx", "blockDim", "gridDim", "grid", "gridsize")


@dataclass(frozen=True)
class _CudaName:
    """``numba.cuda.<name>`` resolved by name."""

    name: str


class _FunctionAnalysis:
    def __init__(self, analyzer: _Analyzer, func_ir: Any) -> None:
        from numba.core import ir

        self.ir = ir
        self.an = analyzer
        self.func_ir = func_ir
        self.defs: dict[str, list[Any]] = {}
        self.arg_of: dict[str, int] = {}
        self.dims: set[int] = set()
        self.sources: set[str] = set()
        self.written: set[int] = set()
        self.shared: list[str] = []  # shapes of static shared arrays
        self._alias_memo: dict[str, frozenset] = {}
        self.subscripts: list[tuple[int, int, int, frozenset]] = []
        self.problems: list[str] = []
        self.unattributed: list[str] = []
        self.memo: dict[str, Any] = {}
        self.returns: list[Any] = []
        self.stmts: list[Any] = []
        for block in func_ir.blocks.values():
            for stmt in block.body:
                self.stmts.append(stmt)
                if isinstance(stmt, ir.Assign):
                    self.defs.setdefault(stmt.target.name, []).append(stmt.value)
                    if isinstance(stmt.value, ir.Arg):
                        self.arg_of[stmt.target.name] = stmt.value.index
                elif isinstance(stmt, ir.Return):
                    self.returns.append(stmt.value)
        self.name = getattr(func_ir, "func_id", None) and func_ir.func_id.func_name

    # -- objects (globals and their attributes) ---------------------------------------
    def resolve(self, var: Any, depth: int = 0) -> Any:
        ir = self.ir
        if depth > 20:
            return _UNRESOLVED
        defs = self.defs.get(var.name, [])
        if len(defs) != 1:
            return _UNRESOLVED
        d = defs[0]
        if isinstance(d, (ir.Global, ir.FreeVar)):
            return d.value
        if isinstance(d, ir.Const):
            return d.value
        if isinstance(d, ir.Var):
            return self.resolve(d, depth + 1)
        if isinstance(d, ir.Expr) and d.op == "getattr":
            base = self.resolve(d.value, depth + 1)
            if base is _UNRESOLVED:
                return _UNRESOLVED
            if getattr(base, "__name__", None) == "numba.cuda":
                # By name: the simulator's numba.cuda has no threadIdx (or atomic, ...) until
                # a kernel runs (it swaps in a fake module per launch).
                return _CudaName(d.attr)
            if isinstance(base, _CudaName):
                return _CudaName(f"{base.name}.{d.attr}")
            try:
                return getattr(base, d.attr)
            except Exception:  # noqa: BLE001
                return _UNRESOLVED
        return _UNRESOLVED

    def param_of(self, var: Any, depth: int = 0) -> int | None:
        """The parameter index ``var`` is (through plain copies), else None."""
        if var.name in self.arg_of:
            return self.arg_of[var.name]
        defs = self.defs.get(var.name, [])
        if len(defs) == 1 and isinstance(defs[0], self.ir.Var) and depth < 20:
            return self.param_of(defs[0], depth + 1)
        return None

    def _is(self, obj: Any, name: str) -> bool:
        if isinstance(obj, _CudaName):
            return obj.name == name
        target = self.an._cuda.get(name)
        return target is not None and obj is target

    # -- dependences --------------------------------------------------------------------
    def dep(self, var: Any) -> Any:
        name = var.name
        if name in self.memo:
            return self.memo[name]
        self.memo[name] = _EMPTY  # cycles (loop-carried values) see nothing more through themselves
        result: Any = None
        for d in self.defs.get(name, []):
            v = self.dep_of_value(d)
            result = v if result is None else _join(result, v)
        if result is None:
            result = _EMPTY
        self.memo[name] = result
        return result

    def dep_of_value(self, d: Any) -> Any:
        ir = self.ir
        if isinstance(d, ir.Var):
            return self.dep(d)
        if isinstance(d, ir.Arg):
            return frozenset({("arg", d.index)})
        if isinstance(d, (ir.Const, ir.Global, ir.FreeVar)):
            return _EMPTY
        if not isinstance(d, ir.Expr):
            return _EMPTY
        op = d.op
        if op == "getattr":
            obj = self.resolve(d.value)
            for idx_name, kind in (("threadIdx", "tid"), ("blockIdx", "bid"), ("blockDim", "bdim"), ("gridDim", "stride")):
                if self._is(obj, idx_name) and d.attr in _DIMS:
                    dim = _DIMS.index(d.attr)
                    self.dims.add(dim)
                    if kind in ("tid", "bid"):
                        self.sources.add(idx_name)
                    return frozenset({(kind, dim)})
            return _flat(self.dep(d.value))
        if op == "call":
            return self.dep_of_call(d)
        if op in ("static_getitem", "getitem"):
            base = self.dep(d.value)
            self.record_subscript(d.value, d.index if op == "static_getitem" else d.index, op == "static_getitem")
            if isinstance(base, tuple):
                if op == "static_getitem" and isinstance(d.index, int) and -len(base) <= d.index < len(base):
                    return base[d.index]
                if op == "getitem":
                    k = self.resolve(d.index)
                    if isinstance(k, int) and -len(base) <= k < len(base):
                        return base[k]
                return _flat(base)
            return _EMPTY  # a load from memory: data, not a position
        if op == "build_tuple":
            return tuple(self.dep(v) for v in d.items)
        if op in ("exhaust_iter",):
            return self.dep(d.value)
        if op == "cast":
            return self.dep(d.value)
        if op in ("getiter", "iternext", "pair_first"):
            return _flat(self.dep(d.value))
        if op == "pair_second":
            return _EMPTY
        if op in ("binop", "inplace_binop"):
            return _binop(d.fn, _flat(self.dep(d.lhs)), _flat(self.dep(d.rhs)))
        if op == "unary":
            return _scaled(_flat(self.dep(d.value))) if d.fn != operator.pos else _flat(self.dep(d.value))
        out: frozenset = _EMPTY
        for v in d.list_vars():
            out = out | _flat(self.dep(v))
        return out

    def dep_of_call(self, d: Any) -> Any:
        fn = self.resolve(d.func)
        args = list(d.args) + [v for _, v in (d.kws or ())]
        if self._is(fn, "grid") or self._is(fn, "gridsize"):
            n = self.resolve(d.args[0]) if d.args else _UNRESOLVED
            if type(n) is not int or not 1 <= n <= 3:
                self.problems.append(f"cuda.{'grid' if self._is(fn, 'grid') else 'gridsize'}() with a non-constant or invalid dimension count")
                return _EMPTY
            self.dims.update(range(n))
            if self._is(fn, "gridsize"):
                strides = tuple(frozenset({("stride", k)}) for k in range(n))
                return strides[0] if n == 1 else strides
            self.sources.add("grid")
            comps = tuple(frozenset({("pos", k)}) for k in range(n))
            return comps[0] if n == 1 else comps
        if isinstance(fn, _CudaName):
            if fn.name.startswith("atomic.") and d.args:
                self.written |= self.aliases(d.args[0])  # atomics write their first argument
                if len(d.args) > 1:  # ... at the index of their second: a subscript like any other
                    self.record_subscript(d.args[0], d.args[1], False, store=True)
            elif fn.name == "shared.array":
                shape = self.resolve(d.args[0]) if d.args else _UNRESOLVED
                if shape is _UNRESOLVED:
                    for k, v in d.kws or ():
                        if k == "shape":
                            shape = self.resolve(v)
                self.shared.append(repr(shape) if shape is not _UNRESOLVED else "?")
        elif not _pure(fn):
            py = _device_py_func(fn)
            if py is None:  # a call the analysis cannot see into may write any array it is given
                for v in args:
                    self.written |= self.aliases(v)
                base = self._method_base(d.func)
                if base is not None:
                    self.written |= self.aliases(base)
                self.written |= self.aliases(d.func)  # an inner function writes what its closure holds
        py = _device_py_func(fn)
        if py is not None:
            s = self.an.summarize(py)
            call_args = _positional(py, d)  # keyword arguments placed at their parameter's position
            unmatched = call_args is None or d.vararg is not None or _variadic(py)
            if call_args is None:
                self.problems.append(f"calls {getattr(py, '__name__', py)!r} with arguments the analysis cannot match")
                call_args = list(d.args)
            if unmatched and s.written:
                # f(*t), or a callee taking *args: which argument lands where is not known, so every
                # argument it is given may be written (an adversarial trial: out was not copied back)
                for v in list(d.args) + [v for _, v in (d.kws or ())] + ([d.vararg] if d.vararg is not None else []):
                    self.written |= self.aliases(v)
            for i in s.written:
                if i < len(call_args) and call_args[i] is not None:
                    self.written |= self.aliases(call_args[i])
            self.dims.update(s.dims_used)
            self.sources.update(s.sources)
            self.problems.extend(s.problems)
            self.unattributed.extend(s.unattributed)
            self.shared.extend(s.shared)
            argdeps = [self.dep(v) if v is not None else _EMPTY for v in call_args]
            for pidx, k, pos, dep in s.subscripts:
                if pidx < len(call_args) and call_args[pidx] is not None:
                    param = self.param_of(call_args[pidx])
                    if param is not None:
                        self.subscripts.append((param, k, pos, _subst(dep, argdeps)))
                    elif pidx in s.written and self.aliases(call_args[pidx]):
                        # a view of an argument written by the callee at a grid position (a review:
                        # store(out[row], col, v) got round the refusal, 1984 of 2000 outputs unwritten)
                        self._unattributed_store(_subst(dep, argdeps))
            return _subst(s.ret, argdeps)
        if fn is _UNRESOLVED or _is_external_device(fn):
            if _is_external_device(fn):
                self.problems.append(f"calls {getattr(fn, 'name', fn)!r}, a function whose code is not Python")
        if fn is range:
            # A range loop's variable is its start, stepped: the position survives a grid-stride
            # loop (range(y0, n, sy)); bounds and steps add nothing. range(n) counts from 0.
            if len(d.args) >= 2:
                return _flat(self.dep(d.args[0]))
            return _scaled(_flat(self.dep(d.args[0]))) if d.args else _EMPTY
        out: frozenset = _EMPTY
        for v in args:
            out = out | _flat(self.dep(v))
        if fn in (min, max, int):  # clamps and casts keep a position what it is
            return out
        return _scaled(out)

    def aliases(self, var: Any) -> frozenset:
        """Parameters whose memory ``var`` may refer to (views, elements, tuples of them)."""
        name = var.name
        if name in self._alias_memo:
            return self._alias_memo[name]
        self._alias_memo[name] = _EMPTY
        ir = self.ir
        out: frozenset = _EMPTY
        for d in self.defs.get(name, []):
            if isinstance(d, ir.Arg):
                out = out | {d.index}
            elif isinstance(d, ir.Var):
                out = out | self.aliases(d)
            elif isinstance(d, ir.Expr):
                if d.op in ("getattr", "getitem", "static_getitem", "exhaust_iter", "cast"):
                    out = out | self.aliases(d.value)
                elif d.op == "build_tuple":
                    for v in d.items:
                        out = out | self.aliases(v)
                elif d.op == "call":
                    fn = self.resolve(d.func)
                    # a callee that may write its arguments, or one whose result may hold them
                    # (enumerate, zip, reversed, iter, tuple, list, ...), hands back their memory
                    if not (_pure(fn) and _fresh_result(fn)):
                        for v in list(d.args) + [v for _, v in (d.kws or ())]:
                            out = out | self.aliases(v)
                        base = self._method_base(d.func)
                        if base is not None:
                            out = out | self.aliases(base)
                        out = out | self.aliases(d.func)  # (an inner function's closure)
                elif d.op not in _FRESH:
                    # anything else (iterating a tuple of arrays, a list of them, an inner
                    # function's closure, ...) may hand back what it was built from: counted
                    # (an adversarial trial: `for a in (out,): a[i] = ...` was not seen as
                    # writing out, and @elementwise did not copy it back)
                    for v in d.list_vars():
                        out = out | self.aliases(v)
        self._alias_memo[name] = out
        return out

    def _method_base(self, func_var: Any) -> Any:
        """``a`` for a call of ``a.method``, where ``a`` is not a module or global object."""
        defs = self.defs.get(func_var.name, [])
        if len(defs) == 1 and isinstance(defs[0], self.ir.Expr) and defs[0].op == "getattr":
            if self.resolve(defs[0].value) is _UNRESOLVED:
                return defs[0].value
        return None

    def record_subscript(self, arr_var: Any, index: Any, static: bool, store: bool = False) -> None:
        param = self.param_of(arr_var)
        if param is None and store and not static and self.aliases(arr_var):
            # a store: the grid must cover the memory written (a read through a view cannot leave
            # output unwritten: the extent then comes from what is written, or nothing gives it)
            self._unattributed_store(self.dep(index))
            return
        if param is None or static:
            return  # constant subscripts carry no position
        dep = self.dep(index)
        if isinstance(dep, tuple):
            for pos, p in enumerate(dep):
                self.subscripts.append((param, len(dep), pos, _flat(p)))
        else:
            self.subscripts.append((param, 1, 0, dep))

    def _unattributed_store(self, dep: Any) -> None:
        if any(isinstance(a, tuple) and a[0] in ("pos", "spos", "tid", "bid") for a in _flat(dep)):
            self.unattributed.append(
                "a grid position indexes a store into a view, element or alias of an array argument "
                "(out[row][col] = v, r = out[row]; r[col] = v, a row passed to a device function that "
                "writes it, an array reached through a tuple or a conditional), whose axis the analysis "
                "cannot tell")  # fmt: skip

    def run(self) -> _Summary:
        ir = self.ir
        for stmt in self.stmts:
            if isinstance(stmt, ir.Assign):
                self.dep(stmt.target)
            elif isinstance(stmt, ir.SetItem):
                self.record_subscript(stmt.target, stmt.index, False, store=True)
                self.written |= self.aliases(stmt.target)
                for v in stmt.list_vars():
                    self.dep(v)
            elif isinstance(stmt, ir.StaticSetItem):
                self.written |= self.aliases(stmt.target)
                for v in stmt.list_vars():
                    self.dep(v)
            elif isinstance(stmt, ir.SetAttr):  # out[i].x = v: a record's field (an adversarial trial: missed)
                self.written |= self.aliases(stmt.target)
                for v in stmt.list_vars():
                    self.dep(v)
            else:
                for v in stmt.list_vars():
                    self.dep(v)
        ret: Any = None
        for r in self.returns:
            v = self.dep(r)
            ret = v if ret is None else _join(ret, v)
        return _Summary(
            ret if ret is not None else _EMPTY, self.dims, self.sources, self.written, self.shared, self.subscripts,
            self.problems, self.unattributed,
        )


_POSITION_KINDS = ("pos", "tid", "bid")
_ADDITIVE = (operator.add, operator.sub, operator.iadd, operator.isub)
_MULTIPLY = (operator.mul, operator.imul)


def _scaled(dep: frozenset) -> frozenset:
    """A position transformed other than by adding an offset (``2 * x``, ``x // 2``, ``x % 3``):
    it still depends on the grid dimension, but no longer runs along an axis one for one."""
    return frozenset(("spos", a[1]) if a[0] in _POSITION_KINDS else a for a in dep)


def _binop(fn: Any, lhs: frozenset, rhs: frozenset) -> frozenset:
    if fn in _ADDITIVE:
        return lhs | rhs  # x + 1, threadIdx.x + blockIdx.x * blockDim.x
    if fn in _MULTIPLY:
        # blockIdx.d * blockDim.d is the first thread of the block: it stays a block index
        for a, b in ((lhs, rhs), (rhs, lhs)):
            if b and all(t[0] == "bdim" for t in b) and all(t[0] in ("bid", "arg") for t in a):
                return a | b
    if fn in (operator.lt, operator.le, operator.gt, operator.ge, operator.eq, operator.ne):
        return _scaled(lhs | rhs)
    return _scaled(lhs | rhs)


def _positional(py: Any, call: Any) -> list[Any] | None:
    """The call's argument variables in the callee's parameter order (``None``: cannot match)."""
    code = getattr(py, "__code__", None)
    if code is None:
        return None
    names = list(code.co_varnames[: code.co_argcount])
    out: list[Any] = list(call.args) + [None] * max(0, len(names) - len(call.args))
    for k, v in call.kws or ():
        if k not in names:
            return None
        out[names.index(k)] = v
    if call.vararg is not None or getattr(call, "varkwarg", None) is not None:
        return None
    return out


def _flat(dep: Any) -> frozenset:
    if isinstance(dep, tuple):
        out: frozenset = _EMPTY
        for x in dep:
            out = out | _flat(x)
        return out
    return dep


def _join(a: Any, b: Any) -> Any:
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        return tuple(_join(x, y) for x, y in zip(a, b))
    return _flat(a) | _flat(b)


def _subst(dep: Any, argdeps: list[Any]) -> Any:
    """Replace ``("arg", i)`` atoms by the caller's dependence of argument ``i``."""
    if isinstance(dep, tuple):
        return tuple(_subst(x, argdeps) for x in dep)
    out: frozenset = _EMPTY
    for atom in dep:
        if atom[0] == "arg":
            if atom[1] < len(argdeps):
                out = out | _flat(argdeps[atom[1]])
        else:
            out = out | {atom}
    return out


def _pure(fn: Any) -> bool:
    """Callees that never write memory they are given: builtins, math, numba.cuda's helpers
    other than atomics, thread-index helpers, constructors of local/shared arrays."""
    import builtins

    if isinstance(fn, _CudaName):
        return not fn.name.startswith("atomic.")
    if fn is _UNRESOLVED or fn is None:
        return False
    if _is_cast(fn):
        return True
    if isinstance(fn, type) and fn.__module__ == "builtins":
        return True  # int, float, bool, range, ...
    name = getattr(fn, "__name__", None)
    if name is not None and getattr(builtins, name, None) is fn:
        return True  # len, min, max, abs, ...
    return _math_or_ufunc(fn)


def _math_or_ufunc(fn: Any) -> bool:
    """``math``'s functions and NumPy's ufuncs: they write nothing and return numbers."""
    import math

    name = getattr(fn, "__name__", None)
    if getattr(fn, "__module__", None) == "math" or (name is not None and getattr(math, name, None) is fn):
        return True
    mod = getattr(type(fn), "__module__", "") or ""
    return type(fn).__name__ == "ufunc" and mod.startswith("numpy")


def _is_cast(fn: Any) -> bool:
    """A number type called as a cast: numba's (``numba.float32(x)``) or NumPy's scalar types
    (``np.float32(x)``): they write nothing and return a number (a review: ``float32(a[i])``
    counted ``a`` as written)."""
    import numpy as np

    if isinstance(fn, type) and issubclass(fn, np.generic):
        return True
    mod = type(fn).__module__ or ""
    return mod.startswith("numba.core.types") and callable(fn)


_FRESH_BUILTINS = frozenset({"len", "abs", "min", "max", "round", "int", "float", "bool", "complex", "range",
                             "divmod", "pow", "hash", "ord", "chr", "isinstance", "print"})


def _fresh_result(fn: Any) -> bool:
    """Pure callees whose result is a number (or a range, or nothing), never a container or
    iterator over their arguments: numba.cuda's helpers, math, NumPy's ufuncs, ``len``,
    ``min``, ``abs``, ``int``, ... (``enumerate``, ``zip``, ``tuple`` and the like are not)."""
    import builtins

    if isinstance(fn, _CudaName) or _is_cast(fn):
        return True
    name = getattr(fn, "__name__", None)
    if name in _FRESH_BUILTINS and getattr(builtins, name, None) is fn:
        return True
    return _math_or_ufunc(fn)


def _variadic(func: Any) -> bool:
    """Whether a Python function takes ``*args`` or ``**kwargs``."""
    code = getattr(func, "__code__", None)
    return code is not None and bool(code.co_flags & (0x04 | 0x08))


def _device_py_func(obj: Any) -> Any:
    """The Python function of a numba CUDA device function (GPU or simulator), else None."""
    if obj is _UNRESOLVED or obj is None:
        return None
    py = getattr(obj, "py_func", None) or getattr(obj, "fn", None)
    if py is None or not hasattr(py, "__code__"):
        return None
    mod = type(obj).__module__ or ""
    if mod.startswith("numba") or mod.startswith("ringkernel"):
        return py
    return None


def _is_external_device(obj: Any) -> bool:
    """A ``cuda.declare_device`` function (code in another language: opaque to the analysis)."""
    mod = type(obj).__module__ or ""
    return mod.startswith("numba") and type(obj).__name__ in ("ExternFunction", "FakeExternFunction") or (
        type(obj).__name__ == "Function" and hasattr(obj, "typing_key") and "declare_device" in repr(obj)
    )
