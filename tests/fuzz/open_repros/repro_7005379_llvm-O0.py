"""graphc fuzz reproduction: seed 7005379 (inference), path llvm-O0: mismatch.
TranslationValidationError: lowering to kernel IR changed what graph 'fuzz7005379' computes: output 0 (f32[2,1,3,1]): element (0, 0, 2, 0): got np.float64(-0.0027812616899609566), truth np.float64(-0.3332553803920746), float32 reference np.float64(-0.3332553803920746), tolerance 1.93e-05 (1 of 6 elements off) (random inputs, seed 0; GRAPHC_VERIFY=2)
Rerun the case: python -m graphc.fuzz --seed 7005379 --cases 1
"""
import numpy as np
import graphc as gc

g = gc.parse("""
graph @fuzz7005379() params(%w1: f32[2,1,7,1] = he_normal(seed=4)) {
  %c0 = const f32[36,1,4] dense<0x5cf25d3e76d6e93eb4fd3fbfac68a3bfb8068e3fa7bc9cbf8fe25dbd4614e63fd11bfdbddfd864bf51dcb6bed734ce3f329628be6a550940d7968b3e554d0b4086a8b3be6ec1ccbfd345ddbdb68b773eb083c43f8aa9f6be9f3088bff9a126beb9504abf2577ec3eb85631be5810e1bdc3735cbf6c81163f8fa7b7bf10855b3f685e43bfd84353be4ef7843fa0c9063f2c507dbe2bb6633e0b8582bec7a1b93ed302853e8bfc413ffc1b5dbf06d810bf4f6e7bbeb9847dbf8c25f6bff490853ec9f02b3e55f8af3fc900333f6d9b2abf07cfe2bd1b3d3a3f861d38bd3aa81a3fefaefe3e55e6f5bee254883f2aa7293f835e47be8ce926bf3a67f43def2f6bbe6407613f708b9d3fbfadda3f5db97f3e3057acbef1f553bd1f6ac8bfec794a3f6d0b7e3ff1790cbe39b5213f8142dbbf462641bfb51d1b40c9fda0bd1f4aad3f6651afbf0f07a73fbf106e3ffb9461bf9b913abf2e746f3fed93e93f1dc59e3ee4d9933e9cbf433fafe8723f9e24da3e0af13b3e4004a83fd48c3e3f6694063f2e4b23bf09b848befb2b3c3f20fb82bf7046acbb9cf053be59f3083ec212a13fa66f0a3d733833becb8befbe31bfa6bf3261ba3f2ec98c3f1dfe7f3e41bebc3f64e88f3ef1f0d1bdf1389fbd9a9489bf4a151fbeeae0f83ce3aeda3fa57b02bda72249bff4955bbe559fffbefde0923fcbb6fcbdff105d3d3f161b400ccfeebf4d460bbf62bf6abf4da0523fe24a283c31ad33bffd7b154017a454bfde4b28bed5f1f5bf5f99f6bfe3ce81bf817788bf867aab3fc4ae4d3f945f94bf0133fb3d>
  %0 = winograd_output_transform(%c0) {tile=4, output_shape=[2, 1, 7, 1], activation="tanh"} : f32[2,1,7,1]  loc("layers/block.py":353)
  %1 = max_pool2d_select(%0, %w1) {kernel=[3, 1], strides=[2, 2]} : f32[2,1,3,1]  loc("layers/block.py":304)
  return %1
}
""")
inputs = {
    
}
params = {
    'w1': np.array([[[[-1.2963300943374634], [1.7208746671676636], [0.24093469977378845], [1.396991491317749], [0.14010579884052277], [-1.2473396062850952], [1.9444785118103027]]], [[[1.3927394151687622], [-0.14016568660736084], [0.3663316071033478], [0.6894652247428894], [-1.291351556777954], [-0.670081615447998], [2.2426180839538574]]]], dtype=np.float32)
}
want = gc.compile(g, backend="reference", opt_level=0, params=params)(**inputs)
got = gc.compile(g, backend="llvm", opt_level=0, params=params)(**inputs)
for w, o in zip(want, got):
    print("reference:", w)
    print("llvm-O0:", o)
