"""graphc fuzz reproduction: seed 7008206 (grad), path llvm-O0: mismatch.
TranslationValidationError: lowering to kernel IR changed what graph 'fuzz7008206' computes: output 0 (f64[4,3]): element (0, 1): got np.float64(21.44584355915482), truth np.float64(21.445843559154223), float32 reference np.float64(21.445843559154223), tolerance 3.51e-13 (4 of 12 elements off) (random inputs, seed 0; GRAPHC_VERIFY=2)
Rerun the case: python -m graphc.fuzz --seed 7008206 --cases 1
"""
import numpy as np
import graphc as gc

g = gc.parse("""
graph @fuzz7008206(%x0: f64[4,3], %cut7_0: f64[3,1], %cut3_0: f64[3,1]) {
  %c0 = const f64[4,1] dense<[[-0.7517134069802561], [1.7493215080879017], [1.5169544447104457], [0.9483904495735223]]>
  %0 = matmul(%x0, %c0) {transpose_a=true} : f64[3,1]  loc("model.py":149)
  %1 = div(%cut7_0, %0) : f64[3,1]
  %2 = add(%cut3_0, %1) : f64[3,1]
  %3 = matmul(%c0, %2) {transpose_b=true} : f64[4,3]   loc("model.py":149)
  return %3
}
""")
inputs = {
    'x0': np.array([[2.4816369748708214, 1.1542102278899693, 0.0005309616623178996], [-0.8881384886006911, 1.004691047439473, 1.229374010208377], [1.5229995655281205, 0.059819669165039786, -0.377300586830618], [0.19847150627162843, 0.13402347051250219, 0.10415818686184501]], dtype=np.float64),
    'cut7_0': np.array([[-2.3154372825801484], [1.114112820769391], [1.7809566204945486]], dtype=np.float64),
    'cut3_0': np.array([[-2.3154372825801484], [1.114112820769391], [1.7809566204945486]], dtype=np.float64)
}
params = {
    
}
want = gc.compile(g, backend="reference", opt_level=0, params=params)(**inputs)
got = gc.compile(g, backend="llvm", opt_level=0, params=params)(**inputs)
for w, o in zip(want, got):
    print("reference:", w)
    print("llvm-O0:", o)
