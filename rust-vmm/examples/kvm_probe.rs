//! `kvm_probe`: exits 0 when /dev/kvm can run our guests, 1 (with the reason on stderr) when it
//! cannot. The nested-KVM harness uses it to choose between running natively and under QEMU.

fn main() {
    match hl_rust_vmm::probe() {
        Ok(()) => println!(
            "kvm_probe: ok (a CPL-3 guest ran SSE instructions, a store and two port writes)"
        ),
        Err(message) => {
            eprintln!("kvm_probe: {message}");
            std::process::exit(1);
        }
    }
}
