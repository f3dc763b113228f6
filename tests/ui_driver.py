"""Drive a built gradio Blocks from tests the same way under gradio 3.41 and 4.40.

Finds the function gradio wired to `<elem_id>.<event>` and calls it with values, so a test runs
the real callback with gradio's own update objects, without a browser.
"""

from __future__ import annotations


def component(blocks, elem_id: str):
    for block in blocks.blocks.values():
        if getattr(block, "elem_id", None) == elem_id:
            return block
    raise KeyError(f"no component with elem_id {elem_id!r}")


def handlers(blocks, elem_id: str, event: str):
    """(fn, inputs, outputs) of every handler bound to that component's event."""
    target = component(blocks, elem_id)._id
    found = []
    if isinstance(blocks.fns, dict):  # gradio 4: BlockFunction knows its (block id, event) targets
        for f in blocks.fns.values():
            if (target, event) in [tuple(t) for t in f.targets]:
                found.append((f.fn, f.inputs, f.outputs))
    else:  # gradio 3: parallel lists of dependencies (targets, trigger) and fns
        for dep, f in zip(blocks.dependencies, blocks.fns):
            if dep["trigger"] == event and target in dep["targets"]:
                found.append((f.fn, f.inputs, f.outputs))
    if not found:
        raise KeyError(f"nothing bound to {elem_id}.{event}")
    return found


def trigger(blocks, elem_id: str, event: str, *values):
    """Call the first handler of `elem_id.event` with `values`; returns its outputs as a list."""
    fn, inputs, outputs = handlers(blocks, elem_id, event)[0]
    assert len(values) == len(inputs), f"{elem_id}.{event} takes {len(inputs)} inputs, got {len(values)}"
    out = fn(*values)
    if len(outputs) == 1:
        return [out]
    return list(out)


def is_update(value) -> bool:
    return isinstance(value, dict) and value.get("__type__") in ("update", "generic_update")  # gradio 4, gradio 3
