"""The seed's Example Usage, now running: batch 4, seq 128, dims 512, 6 layers."""

import torch

from skipjump import skip_layer

dims, head, layers = 512, 8, 6
batch_size, seq_len = 4, 128
torch.manual_seed(0)
dummy_xa = torch.randn(batch_size, seq_len, dims)

model_with_mini_hc = skip_layer(dims, head, layers, mini_hc=True, hc_expansion_rate=3)
output_mini_hc = model_with_mini_hc(dummy_xa)
print("Output with mini Hyper-Connections:", output_mini_hc.shape)
print("  jumps per sample:", model_with_mini_hc.logs["jumps"])

model_without_mini_hc = skip_layer(dims, head, layers, mini_hc=False)
output_without_mini_hc = model_without_mini_hc(dummy_xa)
print("Output without mini Hyper-Connections:", output_without_mini_hc.shape)
print("  jumps per sample:", model_without_mini_hc.logs["jumps"])
