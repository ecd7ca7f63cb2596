"""graphc fuzz reproduction: seed 7000541 (inference), path llvm-O0: mismatch.
TranslationValidationError: lowering to kernel IR changed what graph 'fuzz7000541' computes: output 0 (f64[]): element (): got np.float64(1.8417226076126099), truth np.float64(1.8417224777700905), float32 reference np.float64(1.8417224884033203), tolerance 4.25e-08 (1 of 1 elements off) (random inputs, seed 0; GRAPHC_VERIFY=2)
Rerun the case: python -m graphc.fuzz --seed 7000541 --cases 1
"""
import numpy as np
import graphc as gc

g = gc.parse("""
graph @fuzz7000541() {
  %c0 = const f32[2,3] dense<[[1.5540181398391724, 0.14799492061138153, -0.8853930234909058], [-1.1979668140411377, 1.8773597478866577, -0.2921557128429413]]>
  %c1 = const i32[2] dense<[1, 1]>
  %0 = softmax_cross_entropy(%c0, %c1) {reduction="sum"} : f32[]  loc("/home/user/project/model.py":366)
  %1 = cast(%0) {to=f64} : f64[]                                  loc("layers/block.py":400)
  return %1
}
""")
inputs = {
    
}
params = {
    
}
want = gc.compile(g, backend="reference", opt_level=0, params=params)(**inputs)
got = gc.compile(g, backend="llvm", opt_level=0, params=params)(**inputs)
for w, o in zip(want, got):
    print("reference:", w)
    print("llvm-O0:", o)
