"""What Select scores is what the network computes: a conv site's candidate response.

Select ranks candidate filters by the metric of the post-activations they would have once
added (identity BatchNorm entries, pooling, read in eval mode as the metric is). On every conv
site of the small CNN (with and without BatchNorm) and of a WRN (stem and tied groups),
``candidate_post`` of a filter must equal the new channel's column of the network's own
post-activations after the filter is added with zero fan-out.
"""

from functools import partial

import pytest
import test_cnn
import test_wrn
import torch

from sklearn_north.growth.initializers import tied_fan_in
from sklearn_north.growth.sites import NewNeurons, add_neurons

#: network name -> (the network, a batch of its images), from the CNN's and WRN's tests.
NETWORKS = {
    "cnn": lambda: (test_cnn.make_cnn(batch_norm=False), test_cnn.images()),
    "cnn-bn": lambda: (test_cnn.make_cnn(batch_norm=True), test_cnn.images()),
    "wrn": lambda: (test_wrn.make_wrn(), test_wrn.images()),
}


def _conv_site_indices(module):
    return [i for i, site in enumerate(module.growth_sites()) if site.is_conv]


@pytest.mark.parametrize("network", list(NETWORKS))
def test_candidate_response_is_the_added_channels_post_activation(network):
    module, X = NETWORKS[network]()
    # Non-trivial BatchNorm statistics: the old channels' entries are not the identity.
    test_cnn.train_a_little(module, X)
    g = torch.Generator().manual_seed(2)
    indices = _conv_site_indices(module)
    assert indices
    for index in indices:
        site = module.growth_sites()[index]
        acts = module.site_activations(X, index + 1)[index]
        inputs, old = acts.inputs, acts.post.shape[1]
        fan_in = torch.randn((3, *site.producer.weight.shape[1:]), generator=g)
        bias = None
        if site.producer.bias is not None:
            bias = torch.randn(3, generator=g)
        scored = site.candidate_post(inputs, fan_in, bias)
        add_neurons(
            site,
            NewNeurons(fan_in=fan_in, bias=bias),
            tied_fan_in=partial(tied_fan_in, generator=g),
        )
        grown = module.site_activations(X, index + 1)[index].post
        assert grown.shape[1] == old + 3
        torch.testing.assert_close(scored, grown[:, old:], rtol=1e-5, atol=1e-6)
        # Sanity: the candidates are alive, so a wrong scale would show.
        assert scored.abs().max() > 1e-2
