"""The pure-torch torch_scatter stand-in used to run the reference code."""
import pytest
import torch
from torch_geometric.utils import scatter as pyg_scatter

from spinconv_train.benchmarks.scatter_standin import as_module, scatter, segment_coo, segment_csr


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
def test_scatter_matches_torch_geometric(reduce):
    gen = torch.Generator().manual_seed(0)
    src = torch.randn(50, 4, generator=gen)
    index = torch.randint(0, 7, (50,), generator=gen)
    expected = pyg_scatter(src, index, dim=0, dim_size=9, reduce=reduce)
    assert torch.allclose(scatter(src, index, dim=0, dim_size=9, reduce=reduce), expected)


def test_scatter_other_dim_and_default_size():
    src = torch.arange(12.0).view(3, 4)
    index = torch.tensor([0, 2, 0, 2])
    out = scatter(src, index, dim=1)
    assert out.shape == (3, 3)
    assert torch.equal(out[:, 0], src[:, 0] + src[:, 2])
    assert torch.equal(out[:, 1], torch.zeros(3))


def test_segments():
    src = torch.arange(10.0).view(5, 2)
    indptr = torch.tensor([0, 2, 2, 5])
    out = segment_csr(src, indptr)
    assert torch.equal(out, torch.stack([src[:2].sum(0), torch.zeros(2), src[2:].sum(0)]))
    index = torch.tensor([0, 0, 2, 2, 2])
    assert torch.equal(segment_coo(src, index, dim_size=3), out)
    with pytest.raises(NotImplementedError, match="1-D indptr"):
        segment_csr(src, indptr.view(1, -1))
    with pytest.raises(ValueError, match="reduce='median'"):
        scatter(src, index, 0, reduce="median")


def test_module_object():
    module = as_module()
    assert module.__name__ == "torch_scatter"
    assert module.scatter is scatter
