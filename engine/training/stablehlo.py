"""What the engine reads from an exported program's StableHLO: FLOPs, constants, custom calls.

The trainer runs programs that train.py's tracer exported (engine/training/tracer.py), so
everything the budget depends on is read here from the program itself, never from what the
tracer says about it.

FLOPs follow XLA's cost model (a dot is 2 * output elements * contracted size, an
elementwise op one per output element, a reduction one per input element per op of its
body) with two differences that keep a flops budget honest:
- a `while` loop counts its body once per iteration when its trip count is static (the
  loop `lax.scan` and `fori_loop` with static bounds lower to); any other loop is
  "uncounted";
- a custom call counts by a formula the engine knows (engine/training/kernel_flops.py: the engine's
  attention kernels, counted as the plain XLA attention they replace, so a step counts the
  same on every backend), or is "uncounted": LAPACK's SVD, eigh or QR, an agent's own
  kernel. XLA counts such calls as zero, which would make them free under a flops budget;
- a shard_map body counts once per device it runs on.
"""
from __future__ import annotations

import dataclasses
import math
import re

# Ops that move or relabel data: no arithmetic.
_MOVEMENT = frozenset("""
constant iota broadcast_in_dim broadcast reshape transpose slice dynamic_slice dynamic_update_slice
concatenate pad gather convert bitcast_convert reverse get_tuple_element tuple optimization_barrier
return get_dimension_size real_dynamic_slice dynamic_broadcast_in_dim dynamic_reshape dynamic_iota
dynamic_pad dynamic_gather after_all create_token partition_id replica_id rng_bit_generator
""".split())
# Custom calls that carry sharding or shape information, not work.
NO_WORK_CALLS = frozenset({"Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape", "shape_assertion",
                           "annotate_device_placement", "AllocateBuffer", "MoveToHost", "MoveToDevice"})
@dataclasses.dataclass(frozen=True)
class KernelCall:
    """One custom call, as a formula sees it."""
    target: str
    operands: tuple[tuple[int, ...], ...]
    results: tuple[tuple[int, ...], ...]
    operand_types: tuple[str, ...]
    config: str  # its attributes (kernel name, backend config), as text


@dataclasses.dataclass(frozen=True)
class ProgramFacts:
    flops: float
    uncounted: tuple[str, ...]  # what the count leaves out: "while (trip count unknown)", custom-call targets
    constant_bytes: int  # data in its constants, every kind (`constant_data_bits`), rounded up per constant
    custom_calls: tuple[str, ...]  # every custom-call target the program calls


def read(module_text: str) -> ProgramFacts:
    """Facts of a StableHLO module (Exported.mlir_module())."""
    from jax._src.interpreters import mlir as jax_mlir  # JAX's MLIR bindings, with StableHLO registered
    from jax._src.lib.mlir import ir

    with jax_mlir.make_ir_context():
        module = ir.Module.parse(module_text)
        top = [view.operation for view in module.body.operations]
        walker = _Walker(ir, {_symbol(op): op for op in top if op.name == "func.func"},
                         {_symbol(op): _mesh_axes(str(op.attributes["mesh"])) for op in top if op.name == "sdy.mesh"})
        main = walker.functions.get("main") or next(iter(walker.functions.values()))
        flops = walker.function_flops(main)
        constants, calls = _constants_and_calls(ir, module.operation)
    return ProgramFacts(flops, tuple(sorted(walker.uncounted)), constants, tuple(sorted(calls)))


class _Walker:
    def __init__(self, ir, functions: dict, meshes: dict):
        self.ir = ir
        self.functions = functions
        self.meshes = meshes  # mesh symbol -> {axis: size}
        self.uncounted: set[str] = set()
        self._memo: dict[str, float] = {}

    def function_flops(self, func) -> float:
        name = _symbol(func)
        if name not in self._memo:
            self._memo[name] = 0.0  # a recursive call counts nothing more
            self._memo[name] = self.region_flops(func.regions[0])
        return self._memo[name]

    def region_flops(self, region) -> float:
        return sum(self.op_flops(op) for block in region.blocks for op in block.operations)

    def op_flops(self, view) -> float:
        op = view.operation
        name = op.name.split(".", 1)[-1]
        if name == "while":
            return self._while_flops(op)
        if name in ("case", "if"):
            return max((self.region_flops(region) for region in op.regions), default=0.0)
        if op.name == "func.call":
            return self._call_flops(op)
        if op.name == "sdy.manual_computation":  # shard_map: the body runs once per device
            return self._devices_of(op) * sum(self.region_flops(region) for region in op.regions)
        if name == "composite":
            return self._named_flops(str(op.attributes["decomposition"]))
        if name == "custom_call":
            return self._custom_call_flops(op)
        if name == "dot_general":
            return 2.0 * _elements(op.results[0].type) * _contracted(op)
        if name == "dot":
            return 2.0 * _elements(op.results[0].type) * _shape(op.operands[0].type)[-1]
        if name == "convolution":
            return 2.0 * _elements(op.results[0].type) * _kernel_fan_in(op)
        if name in ("reduce", "reduce_window", "scatter", "select_and_scatter", "all_reduce",
                    "reduce_scatter", "sort"):
            body = sum(len(list(block.operations)) - 1 for region in op.regions for block in region.blocks)
            return float(sum(_elements(v.type) for v in op.operands)) * max(1, body)
        if name in _MOVEMENT or op.name.startswith("func.") or op.name.startswith("sdy."):
            return 0.0
        return float(sum(_elements(r.type) for r in op.results))

    def _devices_of(self, op) -> int:
        """Devices a manual computation runs on: the product of its manual axes' sizes."""
        axes = re.findall(r'"([^"]+)"', str(op.attributes["manual_axes"]))
        sizes: dict = {}
        for mesh in self.meshes.values():
            sizes.update(mesh)
        missing = [axis for axis in axes if axis not in sizes]
        if missing:
            self.uncounted.add(f"shard_map over unknown axes {missing}")
        return math.prod(sizes.get(axis, 1) for axis in axes)

    def _while_flops(self, op) -> float:
        trips = _trip_count(self.ir, op)
        per_trip = sum(self.region_flops(region) for region in op.regions)
        if trips is None:
            self.uncounted.add("while (trip count unknown)")
            return per_trip
        return trips * per_trip

    def _call_flops(self, op) -> float:
        return self._named_flops(str(op.attributes["callee"]))

    def _named_flops(self, symbol: str) -> float:
        func = self.functions.get(symbol.lstrip("@"))
        if func is None:
            self.uncounted.add(f"call to {symbol}")
            return 0.0
        return self.function_flops(func)

    def _custom_call_flops(self, op) -> float:
        target = _call_target(op)
        if target in NO_WORK_CALLS:
            return 0.0
        from engine.training.kernel_flops import FORMULAS  # imported here: it counts with this module

        formula = FORMULAS.get(target)
        attributes = op.attributes
        config = " ".join(f"{attributes[i].name} = {attributes[i].attr}" for i in range(len(attributes)))
        call = KernelCall(target, tuple(_shape(v.type) for v in op.operands), tuple(_shape(r.type) for r in op.results),
                          tuple(str(v.type) for v in op.operands), config)
        flops = formula(call) if formula is not None else None
        if flops is None:
            self.uncounted.add(target)
            return 0.0
        return float(flops)


def _mesh_axes(text: str) -> dict[str, int]:
    """#sdy.mesh<["data"=8, "model"=2]> -> {"data": 8, "model": 2}"""
    return {axis: int(size) for axis, size in re.findall(r'"([^"]+)"\s*=\s*(\d+)', text)}


def _ops(root):
    for region in root.regions:
        for block in region.blocks:
            for view in block.operations:
                op = view.operation
                yield op
                yield from _ops(op)


def _constants_and_calls(ir, root) -> tuple[int, set[str]]:
    total, calls = 0, set()
    for op in _ops(root):
        if op.name == "stablehlo.constant":
            total += -(-constant_data_bits(ir, op) // 8)
        elif op.name == "stablehlo.custom_call":
            calls.add(_call_target(op))
    return total, calls


def constant_data_bits(ir, op) -> int:
    """The data one constant carries, in bits: its elements (one for a splat or a scalar, which
    still carries one value) times its element type's real width (i1 1 bit, bf16 16,
    complex<f32> 64). An attribute of an unknown kind counts all its elements."""
    result = op.results[0].type
    elements = 1 if _is_splat(op) else max(1, _elements(result))
    return elements * element_bits(_element_type(result))


def _is_splat(op) -> bool:
    try:
        value = op.attributes["value"]
    except TypeError:  # the bindings cannot downcast some element types (complex): read its text
        text = str(op).split("dense<", 1)
        return len(text) == 2 and not text[1].startswith(("[", '"'))
    return bool(getattr(value, "is_splat", False))


def element_bits(element: str) -> int:
    """Bits of one element of an MLIR element type: f32 32, bf16 16, f8E4M3FN 8, i1 1, ui4 4,
    complex<f64> 128, index 64. An unknown type counts 64."""
    complex_of = re.fullmatch(r"complex<(.+)>", element)
    if complex_of:
        return 2 * element_bits(complex_of.group(1))
    width = re.match(r"(?:b?f|tf|u?i|si)(\d+)", element)
    return int(width.group(1)) if width else 64


def _element_type(mlir_type) -> str:
    """tensor<4x8xcomplex<f32>> -> complex<f32>; tensor<f32> -> f32."""
    text = str(mlir_type)
    match = re.match(r"tensor<(?:\d+x)*(.*)>$", text)
    element = match.group(1) if match else text
    depth = 0
    for index, char in enumerate(element):  # an encoding after a top-level comma is no part of it
        depth += (char == "<") - (char == ">")
        if char == "," and depth == 0:
            return element[:index].strip()
    return element.strip()


def _trip_count(ir, op) -> int | None:
    """Iterations of a loop that counts a carried integer i from a constant c0 up to a constant c1
    by one (the condition returns `i < c1` itself, the body returns `i + 1`): c1 - c0. None
    otherwise: a condition that only contains such a compare (`(i < 2) | (j < n)`, `not (i < c1)`)
    may run any number of times."""
    cond, body = op.regions[0].blocks[0], op.regions[1].blocks[0]
    compare = _owner(ir, list(cond.operations)[-1].operation.operands[0])
    if compare is None or compare.name != "stablehlo.compare" \
            or "LT" not in str(compare.attributes["comparison_direction"]):
        return None
    index = _block_arg_index(ir, compare.operands[0], cond)
    limit = _constant_int(ir, compare.operands[1])
    if index is None or limit is None:
        return None
    start = _constant_int(ir, op.operands[index])
    if start is None or not _increments_by_one(ir, body, index):
        return None
    return max(0, limit - start)


def _increments_by_one(ir, body, index: int) -> bool:
    returned = list(body.operations)[-1].operation.operands[index]
    owner = _owner(ir, returned)
    if owner is None or owner.name != "stablehlo.add":
        return False
    a, b = owner.operands
    return ((_block_arg_index(ir, a, body) == index and _constant_int(ir, b) == 1)
            or (_block_arg_index(ir, b, body) == index and _constant_int(ir, a) == 1))


def _block_arg_index(ir, value, block) -> int | None:
    value = value.maybe_downcast()
    if not isinstance(value, ir.BlockArgument):
        return None
    return value.arg_number if value.owner == block else None


def _owner(ir, value):
    value = value.maybe_downcast()
    return value.owner if isinstance(value, ir.OpResult) else None


def _constant_int(ir, value) -> int | None:
    owner = _owner(ir, value)
    if owner is None or owner.name != "stablehlo.constant":
        return None
    attr = owner.attributes["value"]
    if not isinstance(attr, ir.DenseIntElementsAttr) or _shape(owner.results[0].type):
        return None
    return int(attr.get_splat_value().value)


def _call_target(op) -> str:
    return str(op.attributes["call_target_name"]).strip('"')


def _symbol(op) -> str:
    return str(op.attributes["sym_name"]).strip('"')


_TENSOR = re.compile(r"tensor<((?:\d+x)*)([a-z]\w*)")


def _shape(mlir_type) -> tuple[int, ...]:
    match = _TENSOR.match(str(mlir_type))
    if not match:
        return ()
    return tuple(int(d) for d in match.group(1).split("x") if d)


def _elements(mlir_type) -> int:
    return math.prod(_shape(mlir_type)) if str(mlir_type).startswith("tensor<") else 0


def _contracted(op) -> int:
    text = str(op.attributes["dot_dimension_numbers"])
    dims = re.search(r"lhs_contracting_dimensions = \[([\d, ]*)\]", text)
    lhs = _shape(op.operands[0].type)
    return math.prod(lhs[int(d)] for d in dims.group(1).split(",") if d.strip()) if dims else 1


def _kernel_fan_in(op) -> int:
    """Multiply-adds per output element: the kernel's elements over its output features."""
    kernel = _shape(op.operands[1].type)
    spec = re.search(r"x\[([^\]]*)\]->", str(op.attributes["dimension_numbers"]))
    letters = [s.strip() for s in spec.group(1).split(",")] if spec else []
    out_dim = letters.index("o") if "o" in letters else len(kernel) - 1
    return math.prod(kernel) // max(1, kernel[out_dim]) if kernel else 1
