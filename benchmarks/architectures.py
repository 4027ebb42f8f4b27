"""The architectures of issue 23 in the benchmarks: each one's experiment, and the overrides that
shrink it to seconds for `--tiny` / `--dry-run` runs on a CPU (the same code paths, tiny sizes)."""

# experiment -> overrides of its model for tiny runs
TINY = {
    'swinir_classical_x4': ('model.embed_dim=8', 'model.depths=(2,)', 'model.num_heads=(2,)',
                            'model.window_size=4'),
    'hat_x4': ('model.embed_dim=12', 'model.depths=(1,)', 'model.num_heads=(2,)', 'model.window_size=4',
               'model.num_feat=8', 'model.compress_ratio=3', 'model.squeeze_factor=4'),
    'dat_x4': ('model.embed_dim=32', 'model.depths=(2,)', 'model.num_heads=(2,)',
               'model.split_size=(4, 8)'),
    'span_x4': ('model.num_features=8',),
    'realplksr_x4': ('model.dim=8', 'model.n_blocks=1', 'model.kernel_size=5'),
    'omnisr_x4': ('model.num_feat=8', 'model.window_size=4', 'model.res_num=1'),
    'rcan_x4': ('model.num_groups=1', 'model.num_blocks=1', 'model.num_features=16',
                'model.reduction=4'),
}
