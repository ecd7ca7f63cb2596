"""graphc fuzz reproduction: seed 7010186 (inference), path llvm-O0: mismatch.
step 0: output 0 (f32[1,2]): element (0, 0): got np.float64(420.24072265625), truth np.float64(419.3848247933309), float32 reference np.float64(419.38482666015625), tolerance 0.00221 (1 of 2 elements off)
Rerun the case: python -m graphc.fuzz --seed 7010186 --cases 1
"""
import numpy as np
import graphc as gc

g = gc.parse("""
graph @fuzz7010186(%x0: f32[1,2]) {
  %c0 = const f32[2] dense<[0.24561195075511932, -0.4159567058086395]>
  %0 = layer_norm(%x0, %c0, %c0) {axes=[1]} : f32[1,2]  loc("layers/block.py":221)
  %1 = rsqrt(%0) : f32[1,2]                             loc("layers/block.py":359)
  return %1
}
""")
inputs = {
    'x0': np.array([[-0.529959499835968, 0.39953091740608215]], dtype=np.float32)
}
params = {
    
}
want = gc.compile(g, backend="reference", opt_level=0, params=params)(**inputs)
got = gc.compile(g, backend="llvm", opt_level=0, params=params)(**inputs)
for w, o in zip(want, got):
    print("reference:", w)
    print("llvm-O0:", o)
