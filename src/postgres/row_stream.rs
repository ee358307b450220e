//! Streaming a query's rows from the executor straight into Rust.
//!
//! The query runs through SPI (so privileges and row-level security apply
//! as for any query), but its rows go to our own DestReceiver instead of
//! being copied into an SPI tuple table first: reading a million rows costs
//! little more than scanning them.

use std::ffi::CString;

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::errors::{raise, Code};

/// What a row callback tells the stream.
pub enum Flow {
    Continue,
    Stop,
}

type RowFn<'a> = dyn FnMut(&[pg_sys::Datum], &[bool]) -> Flow + 'a;

/// Runs a read-only `query` and calls `row` with each row's values and null
/// flags (valid during the call only). `what` names the source in errors.
pub fn stream_rows(query: &str, what: &str, mut row: &mut RowFn<'_>) {
    let Ok(query) = CString::new(query) else {
        raise(Code::ERRCODE_INTERNAL_ERROR, format!("reading {what}: query contains a NUL byte"));
    };
    let mut receiver = RowReceiver {
        base: pg_sys::DestReceiver {
            receiveSlot: Some(receive_row),
            rStartup: Some(startup_noop),
            rShutdown: Some(receiver_noop),
            rDestroy: Some(receiver_noop),
            mydest: pg_sys::CommandDest::DestNone,
        },
        // a thin pointer to the (fat) closure reference, which outlives the query
        row: (&mut row as *mut &mut RowFn<'_>).cast(),
    };
    let status = Spi::connect(|_client| {
        let options = pg_sys::SPIExecuteOptions { read_only: true, dest: &mut receiver.base, ..Default::default() };
        // SAFETY: SPI is connected; `receiver` and the closure outlive the call
        unsafe { pg_sys::SPI_execute_extended(query.as_ptr(), &options) }
    });
    // a SELECT whose rows go to a DestNone receiver reports SPI_OK_UTILITY
    if status != pg_sys::SPI_OK_UTILITY as i32 && status != pg_sys::SPI_OK_SELECT as i32 {
        raise(Code::ERRCODE_INTERNAL_ERROR, format!("reading {what} failed: SPI status {status}"));
    }
}

/// A DestReceiver that hands rows to a Rust closure.
#[repr(C)]
struct RowReceiver {
    /// first, so a pointer to it is a pointer to the receiver
    base: pg_sys::DestReceiver,
    row: *mut std::ffi::c_void,
}

#[pg_guard]
unsafe extern "C-unwind" fn receive_row(
    slot: *mut pg_sys::TupleTableSlot,
    receiver: *mut pg_sys::DestReceiver,
) -> bool {
    // SAFETY: the executor passes back the receiver we built (base is its
    // first field) and a valid slot of the query's result
    unsafe {
        let natts = (*(*slot).tts_tupleDescriptor).natts;
        if ((*slot).tts_nvalid as i32) < natts {
            pg_sys::slot_getsomeattrs_int(slot, natts);
        }
        let n = natts as usize;
        let values = std::slice::from_raw_parts((*slot).tts_values, n);
        let nulls = std::slice::from_raw_parts((*slot).tts_isnull, n);
        let row = &mut *((*(receiver as *mut RowReceiver)).row as *mut &mut RowFn<'_>);
        matches!(row(values, nulls), Flow::Continue)
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn startup_noop(
    _receiver: *mut pg_sys::DestReceiver,
    _operation: std::ffi::c_int,
    _desc: pg_sys::TupleDesc,
) {
}

#[pg_guard]
unsafe extern "C-unwind" fn receiver_noop(_receiver: *mut pg_sys::DestReceiver) {}
