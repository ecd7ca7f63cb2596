"""graphc fuzz reproduction: seed 4243324603 (train), path llvm-O0: mismatch.
TranslationValidationError: lowering to kernel IR changed what graph 'fuzz4243324603' computes: output 0 (f32[]): element (): got np.float64(-436283046363136.0), truth np.float64(-436250461631694.75), float32 reference np.float64(-inf), tolerance 6.66e+09 (1 of 1 elements off) (random inputs, seed 0; GRAPHC_VERIFY=2)
Rerun the case: python -m graphc.fuzz --seed 4243324603 --cases 1

Open (2026-12-08, found in the last fuzz run of the session, not yet diagnosed to the end):
every compiled path agrees (-4.36283e14) and is nearer the float64 truth (-4.36250e14,
7.5e-5 relative) than the float32 reference (-inf). x / sigmoid(x) = x (1 + exp(-x)) at
x ~ -30 multiplies the relative error of x by ~30, and x comes from batch_norm_inference
on random translation-validation inputs; the likely gap is the stability check's noise,
relative to the value where batch_norm's cancellation error is relative to its operands.
Confirm (or find the lowering bug) before changing the rule.
"""
import numpy as np
import graphc as gc

g = gc.parse("""
graph @fuzz4243324603(%x1: f32[2]) params(%w1: f32[2,4] = zeros(), %w2: f32[2] = glorot_uniform(seed=5) frozen, %w3: f32[2] = zeros()) {
  %0 = batch_norm_inference(%w1, %w2, %w2, %x1, %w3) {axis=0} : f32[2,4]  loc("model.py":306)
  %1 = sigmoid(%0) : f32[2,4]                                             loc("layers/block.py":203)
  %2 = div(%0, %1) : f32[2,4]                                             loc("model.py":173)
  %3 = sum(%2) {axes=[0, 1]} : f32[]
  return %3
}
""")
inputs = {
    'x1': np.array([0.45507538318634033, 0.9549845457077026], dtype=np.float32)
}
params = {
    'w1': np.array([[-0.170791894197464, 0.19988659024238586, -0.033524587750434875, -0.1307082176208496], [-0.3653178811073303, -0.0783313438296318, 0.2316335290670395, -1.0915132761001587]], dtype=np.float32),
    'w2': np.array([-0.9169812798500061, 0.7734265327453613], dtype=np.float32),
    'w3': np.array([1.2335381507873535, -0.7367832064628601], dtype=np.float32)
}
want = gc.compile(g, backend="reference", opt_level=0, params=params)(**inputs)
got = gc.compile(g, backend="llvm", opt_level=0, params=params)(**inputs)
for w, o in zip(want, got):
    print("reference:", w)
    print("llvm-O0:", o)
