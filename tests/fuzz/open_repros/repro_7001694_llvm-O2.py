"""graphc fuzz reproduction: seed 7001694 (inference), path llvm-O2: mismatch.
TranslationValidationError: lowering to kernel IR changed what graph 'fuzz7001694' computes: output 0 (f32[1,1,1]): element (0, 0, 0): got np.float64(0.022089332342147827), truth np.float64(0.0220947265625), float32 reference np.float64(0.0220947265625), tolerance 3.46e-06 (1 of 1 elements off) (random inputs, seed 0; GRAPHC_VERIFY=2)
Rerun the case: python -m graphc.fuzz --seed 7001694 --cases 1
"""
import numpy as np
import graphc as gc

g = gc.parse("""
graph @fuzz7001694(%cut3_0: f16[1,4,3]) {
  %0 = mean(%cut3_0) {axes=[1, 2], keepdims=true} : f16[1,1,1]  loc("layers/block.py":52)
  %1 = cast(%0) {to=f32} : f32[1,1,1]                           loc("model.py":371)
  return %1
}
""")
inputs = {
    'cut3_0': np.array([[[0.53955078125, 0.681640625, 0.55126953125], [0.460205078125, 0.396240234375, -1.2978515625], [-0.028778076171875, 0.1707763671875, -1.326171875], [-0.408935546875, -0.301513671875, -0.30078125]]], dtype=np.float16)
}
params = {
    
}
want = gc.compile(g, backend="reference", opt_level=0, params=params)(**inputs)
got = gc.compile(g, backend="llvm", opt_level=2, params=params)(**inputs)
for w, o in zip(want, got):
    print("reference:", w)
    print("llvm-O2:", o)
