"""graphc fuzz reproduction: seed 7006119 (grad), path llvm-O0: mismatch.
TranslationValidationError: lowering to kernel IR changed what graph 'fuzz7006119' computes: output 0 (f32[3,6]): element (0, 2): got np.float64(-inf), truth np.float64(inf), float32 reference np.float64(inf), tolerance 1.04e-06 (10 of 18 elements off) (random inputs, seed 0; GRAPHC_VERIFY=2)
Rerun the case: python -m graphc.fuzz --seed 7006119 --cases 1
"""
import numpy as np
import graphc as gc

g = gc.parse("""
graph @fuzz7006119() params(%w0: f32[3,6] = zeros(), %w1: f32[3,6] = glorot_uniform(seed=1)) {
  %0 = mul(%w0, %w1) : f32[3,6]  loc("layers/block.py":369)
  %1 = relu(%0) : f32[3,6]
  %2 = rsqrt(%1) : f32[3,6]      loc("model.py":49)
  return %2
}
""")
inputs = {
    
}
params = {
    'w0': np.array([[0.08415253460407257, -0.8362082242965698, 1.2797255516052246, 0.8260435461997986, -1.130976915359497, 1.4069942235946655], [-0.3114604651927948, -2.1791210174560547, -1.0413683652877808, 0.09113413095474243, -0.4759705364704132, -0.7763293385505676], [0.20244759321212769, 0.014105558395385742, -0.9774329662322998, -1.0835381746292114, -0.1405562460422516, -0.10708920657634735]], dtype=np.float32),
    'w1': np.array([[-0.3563651740550995, -1.052258849143982, 0.8300103545188904, 1.0515633821487427, -1.6514999866485596, -0.2512035369873047], [-0.4274479150772095, -0.904498815536499, -0.7714234590530396, 0.477286696434021, -1.4069018363952637, 0.5315040946006775], [2.412220001220703, 1.1097792387008667, 0.2371683269739151, 2.556593894958496, 0.12411987781524658, -0.414135217666626]], dtype=np.float32)
}
want = gc.compile(g, backend="reference", opt_level=0, params=params)(**inputs)
got = gc.compile(g, backend="llvm", opt_level=0, params=params)(**inputs)
for w, o in zip(want, got):
    print("reference:", w)
    print("llvm-O0:", o)
