"""A batch of members run on a fixed set of lanes, each lane refilled as its member stops.

`jax.vmap` of a `while_loop` steps every member until the slowest one stops. Here a batch of
`M` members runs on `w` lanes (`w` cache-sized on a CPU, the whole batch on an accelerator,
where nothing is ever refilled and a look's trips are written out for one fused pass).
Lane `j` runs the members `j + s w` (`s = 0, 1, ...`) one after another, starting from
`s = (j // 16) mod n_j` (`n_j` its members) and wrapping around, so that at any time the lanes work
on every part of the grid alike, and the members done grow evenly with the work (a grid's
rows often differ in their members' lengths). On 16 lanes or fewer, which that rotation
cannot spread, a lane takes every odd stratum's members in reverse (`Order.ids`). A trip
takes one masked step on every lane, and once an eighth of the lanes have a stopped member
with another one waiting, those lanes write their member to the *home* arrays (`M` rows)
and load their next one. A
member is built where a lane loads it (its starting point, its numbers, its first cost and
gradient), so nothing batch-sized is computed before the loop: home is only written.
A trip's cost then follows the members still running, not the slowest member of a fixed
group: what is left is the spread of the lanes' totals at the end, and the trips a stopped
member waits for its lane to be refilled.

A member's `code` is `-(n + 1)` while it runs with `n` iterations taken, and
`8 * iterations + status` once it stops. Members are stepped by the kernel's own arithmetic,
masked by each member's stopping rule, so every member ends bit for bit where the plain
per-member loop ends.

A representation of the lanes (`_batch`'s `Carry` for any pytree problem, `_scalars`' packed
array for one scalar per member) provides the trip; this module moves members
between lanes and home.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array, lax

from ._result import RUNNING, Status

PyTree = Any

# Trips between two looks at how many lanes still run: the count is a reduction over the
# lanes that costs about as much as a trip, while a trip after a member stopped changes
# nothing for it (its step is masked).
CHECK_EVERY = 8
# What a refill costs, in trips of every lane: it writes back and loads every lane. Lanes are
# refilled once the lane-trips lost to lanes that wait (a stopped member, another one waiting),
# summed since the last refill, reach that cost: the waiting then never costs more than the
# refills, however the members' run lengths mix.
REFILL_TRIPS = 4


# Lanes come in whole multiples of this many (XLA compiles fewer to scalar code, whose
# multiply-adds contract differently from the plain loop's).
VECTOR = 16


# Lanes start their turns in blocks of this many neighbours (`Order`): a block loads
# neighbouring members, a few cache lines, while the blocks spread over the whole grid.
BLOCK = 16


def running_code(iterations: Array) -> Array:
    """The code of a member still running after `iterations` steps."""
    return -(iterations + 1)


def pack_code(iterations: Array, status: Array) -> Array:
    """The code of a member that stopped with `status` after `iterations` steps."""
    return iterations * 8 + status


def code_iterations(code: Array) -> Array:
    """Iterations taken, running or stopped."""
    return jnp.where(code < 0, -code - 1, code >> 3)


def code_status(code: Array) -> Array:
    """The `Status` of a stopped member, `RUNNING` for a running one."""
    return jnp.where(code < 0, RUNNING, code & 7)


def next_code(code: Array, n: Array, status: Array, accepted: Array) -> Array:
    """The code after a lane proposed its `n`-th iteration with `status` (`RUNNING` to go on).

    A diverged member (proposal not accepted) keeps its iterate before, so its count stays
    at `n - 1`.
    """
    go = code < 0
    stopped = pack_code(jnp.where(accepted, n, n - 1), status)
    return jnp.where(go & (status != RUNNING), stopped, jnp.where(go, running_code(n), code))


class Representation(NamedTuple):
    """How one kind of lane carry is stepped and read.

    Attributes:
        trip: `(carry, numbers, live) -> carry`: one masked step of every lane, `numbers`
            being the per-member numbers (`run`'s `numbers`) of the lanes' members, and
            `live` a boolean scalar that says a lane ran at the last look (None where the
            loop does not know; the lanes' codes then say).
        code: `carry -> code`, the int32 code of every lane.
        idle: `carry -> carry`, the carry with every lane marked stopped (an empty lane).
    """

    trip: Callable[[PyTree, PyTree, Array | None], PyTree]
    code: Callable[[PyTree], Array]
    idle: Callable[[PyTree], PyTree]


# `(ids) -> (carry, numbers)`: the lanes' start for the members `ids`, and those members' own
# numbers (the learning rate, ...) that a trip takes
Load = Callable[[Array], tuple[PyTree, PyTree]]


class Lanes(NamedTuple):
    ids: Array  # int32 (w,): the member on each lane; `M` for an empty lane
    rounds: Array  # int32 (w,): the members each lane has written home
    carry: PyTree  # the lanes' state, leading axis w
    numbers: PyTree  # the lanes' members' own numbers (learning rate, ...), leading axis w


def _put(home: PyTree, ids: Array, rows: PyTree) -> PyTree:
    return jax.tree.map(lambda h, r: h.at[ids].set(r, mode="drop"), home, rows)


def fold(columns: tuple[Array, ...], ops: tuple[Callable, ...], inits: tuple) -> tuple[Array, ...]:
    """`ops[i]` folded over the leading axis of `columns[i]` from `inits[i]`, every column in
    one variadic reduction (give two columns or more).

    XLA's CPU compiler splits a reduction of one array over more than 32 elements into a tree
    of window reductions, each a kernel to compile and to run; a variadic reduction it keeps
    whole, fused with what computes its columns: one kernel (two counts over 32,768 lanes take
    13 us against 26 us as two sums, and compile 7 fewer kernels).
    """
    return tuple(
        lax.reduce(
            columns,
            tuple(jnp.asarray(v, c.dtype) for v, c in zip(inits, columns, strict=True)),
            lambda a, b: tuple(op(x, y) for op, x, y in zip(ops, a, b, strict=True)),
            (0,),
        )
    )


def counts(*masks: Array) -> tuple[Array, ...]:
    """How many entries of each mask (two or more) are true, as int32, in one reduction."""
    return fold(
        tuple(m.astype(jnp.int32) for m in masks), (lax.add,) * len(masks), (0,) * len(masks)
    )


def select(pred: Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    """Per-lane select: `pred` has the lanes' shape, the leaves may have more axes."""

    def one(a: Array, b: Array) -> Array:
        return jnp.where(pred.reshape(pred.shape + (1,) * (a.ndim - pred.ndim)), a, b)

    return jax.tree.map(one, on_true, on_false)


class Order(NamedTuple):
    """Which member each lane runs in turn: lane `j` runs its `own[j]` members, one of each
    stratum `s` (`j + s w`, or counted from the stratum's end on one block of lanes and an
    odd `s`: `ids`), `s` going round from `first[j] = (j // BLOCK) mod own[j]`."""

    members: int
    own: Array  # int32 (w,)
    first: Array  # int32 (w,)

    @classmethod
    def of(cls, members: int, width: int) -> Order:
        lane = jnp.arange(width, dtype=jnp.int32)
        strata = -(-members // width)
        full = lane < members - (strata - 1) * width
        own = jnp.where(full, strata, strata - 1)
        # by the two divisors as constants: an integer division by a number the compiler
        # knows is a multiplication, by an array it is a loop over the lanes one at a time
        block = lane // BLOCK
        first = jnp.where(full, block % strata, block % max(strata - 1, 1))
        return cls(members, own, first)

    def ids(self, rounds: Array) -> Array:
        """The member each lane runs after writing `rounds` home; `members` once none is left.

        Stratum `s` holds members `s w .. s w + w - 1`, one a lane. Lanes of one block
        (`BLOCK`, where the blocks' rotation does not spread the lanes over the grid) take
        an odd stratum in reverse (the last, partial one over the lanes it has): a grid's
        neighbouring members often run alike (learning rates in order), and a lane then
        pairs a long run with a short one, so the lanes' totals come out closer."""
        width = self.own.shape[0]
        lane = jnp.arange(width, dtype=jnp.int32)
        # `(rounds + first) mod own`, both terms below `own` while the lane has a member
        # left: a subtraction, not an integer division (which a CPU does one lane at a time)
        stratum = rounds + self.first
        stratum = jnp.where(stratum >= self.own, stratum - self.own, stratum)
        start = stratum * width
        across = lane
        if width <= BLOCK:
            count = jnp.minimum(self.members - start, width)  # members in the stratum
            across = jnp.where(stratum % 2 == 1, count - 1 - lane, lane)
        return jnp.where(rounds < self.own, start + across, self.members)


def _load(rep: Representation, load: Load, ids: Array, members: int) -> tuple[PyTree, PyTree]:
    """`load(ids)`, an id of `members` or more giving an empty lane."""
    carry, numbers = load(ids)
    return select(ids >= members, rep.idle(carry), carry), numbers


def _refill(
    rep: Representation, load: Load, home: PyTree, order: Order, lanes: Lanes, tally: Array
) -> tuple[PyTree, Lanes, Array]:
    """Lanes whose member stopped write it home and load their next member, and lanes that
    have run none load their first; `tally` (members written home: all, converged,
    diverged) counts them."""
    members = order.members
    code = rep.code(lanes.carry)
    done = (code >= 0) & (lanes.ids < members)
    unloaded = (lanes.ids >= members) & (lanes.rounds < order.own)
    status = code & 7
    tally = tally + jnp.stack(
        counts(done, done & (status == Status.CONVERGED), done & (status == Status.DIVERGED))
    )
    home = _put(home, jnp.where(done, lanes.ids, members), lanes.carry)
    rounds = lanes.rounds + done
    ids = order.ids(rounds)
    fresh, numbers = _load(rep, load, ids, members)
    # a lane's numbers are those its member was loaded with, computed once
    carry, numbers = select(done | unloaded, (fresh, numbers), (lanes.carry, lanes.numbers))
    return home, Lanes(ids, rounds, carry, numbers), tally


def run(
    rep: Representation,
    load: Load,
    members: int,
    lanes: int,
    monitor: Callable[[PyTree, Array], None] | None = None,
    every: int = 0,
    unroll: bool = False,
    look_each_trip: bool = False,
) -> PyTree:
    """Run members `0 .. members - 1` until all have stopped.

    Args:
        rep: the lane representation.
        load: `ids -> (carry, numbers)`: the start of members `ids` on lanes (codes from
            `rep.code`), and their own numbers (learning rate, ...) that `rep.trip` takes. An
            id of `members` or more may give anything: that lane is made empty.
        members: how many members.
        lanes: how many lanes.
        monitor: called with `(tally, looks)` every `every` looks at the lanes, at the end
            of a stretch (a refill and the looks after it), `tally` being the members
            written home so far (all, converged, diverged; int32): the members still on
            lanes or waiting count as running (for progress reports). The loops of
            refills and looks run inside an outer loop that calls `monitor`: they carry
            no host call, and a report reads no member's state.
        every: looks between two calls of `monitor`.
        unroll: write a look's `CHECK_EVERY` trips out in full, so that XLA can fuse them
            into one pass over the lanes (an accelerator: a trip's cost is the bytes it
            moves, and the fused pass moves the carry once for all of them).
        look_each_trip: when every member has a lane from the start (and no `monitor`),
            look after every trip rather than every `CHECK_EVERY`: for a trip that costs
            far more than a look, the loop then ends on the trip its last member stops.

    Returns:
        every member's stopped carry, `members` on the leading axis of every leaf.
    """
    order = Order.of(members, lanes)
    rounds = jnp.zeros(lanes, jnp.int32)

    def look(ln: Lanes) -> tuple[Array, Array]:
        """(lanes running, lanes with a stopped member and another waiting)."""
        code, real = rep.code(ln.carry), ln.ids < members
        running, waiting = counts(
            real & (code < 0), real & (code >= 0) & (ln.rounds + 1 < order.own)
        )
        return running, waiting

    def body(s: tuple) -> tuple:
        """`CHECK_EVERY` trips, then the counts; `idle` sums the lane-looks waited."""
        ln, looks, running, waiting, idle = s
        live = running > 0
        carry = lax.fori_loop(
            0, CHECK_EVERY, lambda _, c: rep.trip(c, ln.numbers, live), ln.carry, unroll=unroll
        )
        ln = ln._replace(carry=carry)
        return (ln, looks + 1, *look(ln), idle + waiting)

    zero = jnp.array(0, jnp.int32)
    if lanes >= members and monitor is None:  # every member has a lane from the start and
        # keeps it (`ids` is `0 .. lanes - 1`): nothing to refill
        ids = order.ids(rounds)
        start = Lanes(ids, rounds, *_load(rep, load, ids, members))
        if look_each_trip:  # (an empty lane's code is that of a stopped member)
            carry = lax.while_loop(
                lambda c: jnp.any(rep.code(c) < 0),
                lambda c: rep.trip(c, start.numbers, None),
                start.carry,
            )
        else:
            s = lax.while_loop(lambda s: s[2] > 0, body, (start, zero, *look(start), zero))
            carry = s[0].carry
        return jax.tree.map(lambda c: c[:members], carry)

    # Lanes are refilled once the lane-looks lost to waiting reach `threshold`, or none runs:
    # the looks run in an inner loop between two refills, so that a look carries no branch
    # (a `lax.cond` there would copy the lanes on every look) and home stays out of it.
    threshold = max(1, lanes * REFILL_TRIPS // CHECK_EVERY)

    def stretch(s: tuple, end: Array | None = None) -> tuple:
        """A refill, then the looks until another is due (or `end` looks): at least one, whose
        counts tell the next stretch, so the lanes are not counted again after a refill."""
        home, ln, looks, _, _, tally = s
        home, ln, tally = _refill(rep, load, home, order, ln, tally)

        def go(t: tuple) -> Array:
            _, n, live, waiting, idle = t
            more = (live > 0) & (idle + waiting < threshold)
            return more if end is None else more & (n < end)

        one = jnp.array(1, jnp.int32)  # (enters the loop: a lane counted as running)
        ln, looks, live, waiting, _ = lax.while_loop(go, body, (ln, looks, one, zero, zero))
        return (home, ln, looks, live, waiting, tally)

    def more(s: tuple) -> Array:  # a lane runs, or a member waits
        return (s[3] > 0) | (s[4] > 0)

    outer: Callable[[tuple], tuple] = stretch
    if monitor is not None:
        send = monitor

        def report(s: tuple) -> tuple:
            """Stretches for `every` looks, then one report."""
            end = s[2] + every
            s = lax.while_loop(lambda t: more(t) & (t[2] < end), lambda t: stretch(t, end), s)
            send(s[5], s[2])
            return s

        outer = report

    # The lanes start empty, and the first stretch begins with a refill that loads them: the
    # member's start (`load`, often the cost and gradient) is compiled once, in `_refill`.
    shapes = jax.eval_shape(load, rounds)
    carry, numbers = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    start = Lanes(jnp.full(lanes, members, jnp.int32), rounds, rep.idle(carry), numbers)
    # written row by row as members stop: its first values are never read
    home = jax.tree.map(lambda c: jnp.zeros((members, *c.shape[1:]), c.dtype), carry)
    lanes_to_load = jnp.array(lanes, jnp.int32)  # counted as waiting, to enter the loop
    state = (home, start, zero, zero, lanes_to_load, jnp.zeros(3, jnp.int32))
    home, ln, *_ = lax.while_loop(more, outer, state)
    # the lanes' last members: those the last refill loaded already stopped (at their start),
    # which no later refill wrote home
    return _put(home, ln.ids, ln.carry)
