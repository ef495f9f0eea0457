//! fragtrace's kernel side. Each program is a thin wrapper over a `try_*` function; the shared
//! logic lives in the modules below.
#![no_std]
#![no_main]

mod maps;
mod page_alloc;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
