//! `proxy_define_metric`, `proxy_increment_metric`, `proxy_record_metric`, `proxy_get_metric`.
//! A metric id carries its type in the low two bits (counter 0, gauge 1, histogram 2), as
//! Envoy encodes it.

use std::sync::Arc;

use wasmtime::Linker;

use super::memory::{read_string, write_u32, write_u64};
use super::{AbiResult, Caller, Status, status};
use crate::metrics::{Metric, MetricKind};
use crate::vm::VmState;

const TYPE_BITS: u32 = 2;

fn metric(state: &VmState, id: u32) -> Result<Arc<Metric>, Status> {
    let index = (id >> TYPE_BITS).checked_sub(1).ok_or(Status::NotFound)?;
    let metric = state.metrics.get(index as usize).ok_or(Status::NotFound)?;
    if metric.kind as u32 != id & ((1 << TYPE_BITS) - 1) {
        return Err(Status::NotFound);
    }
    Ok(Arc::clone(metric))
}

fn define(caller: &mut Caller<'_>, kind: u32, name: (u32, u32), id_ptr: u32) -> AbiResult {
    let kind = MetricKind::from_abi(kind).ok_or(Status::BadArgument)?;
    let name = read_string(caller, name.0, name.1)?;
    let state = caller.data_mut();
    let metric = state.plugin.runtime.metrics.define(kind, &name);
    state.metrics.push(metric);
    let index = u32::try_from(state.metrics.len()).map_err(|_| Status::BadArgument)?;
    write_u32(caller, id_ptr, (index << TYPE_BITS) | kind as u32)
}

fn increment(state: &VmState, id: u32, offset: i64) -> AbiResult {
    let metric = metric(state, id)?;
    match metric.kind {
        // Counters only go up: Envoy refuses a non-positive increment.
        MetricKind::Counter if offset > 0 => metric.add(offset.unsigned_abs()),
        MetricKind::Gauge => metric.gauge_add(offset),
        _ => return Err(Status::BadArgument.into()),
    }
    Ok(())
}

#[expect(
    clippy::cast_possible_wrap,
    reason = "Envoy stores the u64 in a gauge as is"
)]
fn record(state: &VmState, id: u32, value: u64) -> AbiResult {
    let metric = metric(state, id)?;
    match metric.kind {
        MetricKind::Counter => metric.add(value),
        MetricKind::Gauge => metric.gauge_set(value as i64),
        MetricKind::Histogram => metric.record(value),
    }
    Ok(())
}

#[expect(
    clippy::cast_sign_loss,
    reason = "the ABI returns a gauge's bits as u64, as Envoy does"
)]
fn get(caller: &mut Caller<'_>, id: u32, result_ptr: u32) -> AbiResult {
    let metric = metric(caller.data(), id)?;
    let value = match metric.kind {
        MetricKind::Counter => metric.counter_value(),
        MetricKind::Gauge => metric.gauge_value() as u64,
        // Histograms cannot be read back.
        MetricKind::Histogram => return Err(Status::BadArgument.into()),
    };
    write_u64(caller, result_ptr, value)
}

pub(super) fn add(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: Caller<'_>, kind: u32, np: u32, ns: u32, id_ptr: u32| {
            status(define(&mut c, kind, (np, ns), id_ptr))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |c: Caller<'_>, id: u32, offset: i64| status(increment(c.data(), id, offset)),
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |c: Caller<'_>, id: u32, value: u64| status(record(c.data(), id, value)),
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: Caller<'_>, id: u32, rp: u32| status(get(&mut c, id, rp)),
    )?;
    Ok(())
}
