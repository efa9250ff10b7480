use kiln_targets::plan::BufferLoc;
#[test]
fn dump() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/kws_dscnn.onnx");
    let m = kiln_compiler::frontend::load_model(&p).unwrap();
    let prog = kiln_compiler::aot::plan_model(&m).unwrap();
    for s in &prog.steps {
        let ins: Vec<_> = s.program.buffers.iter().zip(&s.bindings).filter(|(b,_)| matches!(b.role, kiln_ir::kernel::BufferRole::Input(_))).map(|(_,l)| *l).collect();
        let outs: Vec<_> = s.program.buffers.iter().zip(&s.bindings).filter(|(b,_)| matches!(b.role, kiln_ir::kernel::BufferRole::Output(_))).map(|(_,l)| *l).collect();
        if outs.iter().any(|o| matches!(o, BufferLoc::Arena(_)) && ins.contains(o)) {
            println!("== {} {:?} {:?}\n{}", s.node, ins, outs, s.program);
        }
    }
}
