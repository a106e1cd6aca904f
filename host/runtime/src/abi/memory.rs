//! Bounds-checked access to guest memory and returning data through the guest's allocator.

use super::{AbiError, AbiResult, Caller, Status};

/// Copy `len` bytes at `ptr` out of the guest. Pointer 0 is a valid address: only bounds count.
pub(crate) fn read(caller: &Caller<'_>, ptr: u32, len: u32) -> Result<Vec<u8>, AbiError> {
    let memory = caller.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    let start = ptr as usize;
    let end = start
        .checked_add(len as usize)
        .ok_or(Status::InvalidMemoryAccess)?;
    memory
        .data(caller)
        .get(start..end)
        .map(<[u8]>::to_vec)
        .ok_or(Status::InvalidMemoryAccess.into())
}

pub(crate) fn read_string(caller: &Caller<'_>, ptr: u32, len: u32) -> Result<String, AbiError> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

pub(crate) fn write(caller: &mut Caller<'_>, ptr: u32, bytes: &[u8]) -> AbiResult {
    let memory = caller.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    let start = ptr as usize;
    let end = start
        .checked_add(bytes.len())
        .ok_or(Status::InvalidMemoryAccess)?;
    memory
        .data_mut(caller)
        .get_mut(start..end)
        .ok_or(Status::InvalidMemoryAccess)?
        .copy_from_slice(bytes);
    Ok(())
}

pub(crate) fn write_u32(caller: &mut Caller<'_>, ptr: u32, value: u32) -> AbiResult {
    write(caller, ptr, &value.to_le_bytes())
}

pub(crate) fn write_u64(caller: &mut Caller<'_>, ptr: u32, value: u64) -> AbiResult {
    write(caller, ptr, &value.to_le_bytes())
}

/// Hand `data` to the guest: allocate exactly its size with the guest's allocator, copy it,
/// and write pointer and length. Empty data is pointer 0, length 0, with no allocation.
pub(crate) fn copy_out(
    caller: &mut Caller<'_>,
    data: &[u8],
    ptr_ptr: u32,
    size_ptr: u32,
) -> AbiResult {
    if data.is_empty() {
        write_u32(caller, ptr_ptr, 0)?;
        return write_u32(caller, size_ptr, 0);
    }
    let len = u32::try_from(data.len()).map_err(|_| Status::InvalidMemoryAccess)?;
    let allocator = caller
        .data()
        .allocator
        .clone()
        .ok_or(Status::InvalidMemoryAccess)?;
    let ptr = allocator.call(&mut *caller, len)?;
    write(caller, ptr, data)?;
    write_u32(caller, ptr_ptr, ptr)?;
    write_u32(caller, size_ptr, len)
}
