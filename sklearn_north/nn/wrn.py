"""Pre-activation WideResNet-28 whose stem and residual groups grow (SPEC section 8).

A 3x3 stem conv, then three groups of four pre-activation blocks (BatchNorm, ReLU, 3x3
conv, BatchNorm, ReLU, 3x3 conv, plus the skip), groups 2 and 3 opening with stride 2,
then BatchNorm, ReLU, global mean pooling and the output layer. WRN-28-1's widths are
16 (stem), 16, 32 and 64 (groups); WRN-28-k multiplies the groups' by k.

Four growth sites, the paper's four growing units:

- ``stem``: the stem conv's output channels, read through the first block's BatchNorm
  and ReLU by its first conv and its projection.
- ``group1`` .. ``group3``: one *tied* site per group. Its own neurons are the output
  channels of the group's first conv (the strategy's initializer gives them; the metric
  reads them after BatchNorm and ReLU). Tied to them, as many channels are added to the
  other blocks' inner widths and to the group's residual stream: every conv that writes
  the stream (the projection and each block's second conv) gets a random fan-in for them,
  and every module that reads it (the later blocks' first convs, the next group's first
  conv and projection, or the output layer) zero weights, with identity entries in the
  BatchNorms over them. The network's function is unchanged when a group grows.

Every group's first block has a 1x1 projection on its skip, also group 1's: the stem and
group 1 grow independently, so their widths differ (the reference WRN uses an identity
skip where the widths are equal, which growth would break).

The authors' code measures a group's metric with the skips disabled; here it is measured
on the network as it is (the skips on), which is the network being trained.
"""

from torch import nn
from torch.nn import functional as F

from ..growth.sites import Consumer, GrowthSite, TiedChannels
from ._conv import RecordsSiteActivations, rows
from .activations import relu

#: WRN-28-1's widths: the stem and the three groups.
WRN28_WIDTHS = (16, 16, 32, 64)
#: Blocks per group: (28 - 4) / 6.
WRN28_BLOCKS = 4
_STRIDES = (1, 2, 2)


class PreActBlock(nn.Module):
    """BN, ReLU, conv 3x3 (stride), BN, ReLU, conv 3x3, plus the skip (a 1x1 projection of
    the first ReLU's output, or the identity)."""

    def __init__(self, in_channels, width, stride=1, projection=False):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.proj = nn.Conv2d(in_channels, width, 1, stride, 0, bias=False) if projection else None

    def forward(self, X):
        return self.run(X)[0]

    def run(self, X):
        """The block's output, and the tensors the growth sites read: the first BN's
        output and ReLU ``(A, R)``, the first conv's BN output and ReLU ``(Z, H)``."""
        A = self.bn1(X)
        R = relu(A)
        Z = self.bn2(self.conv1(R))
        H = relu(Z)
        skip = X if self.proj is None else self.proj(R)
        return self.conv2(H) + skip, A, R, Z, H


class GrowableWRN(RecordsSiteActivations, nn.Module):
    """``input_shape -> stem -> 3 residual groups -> BN, ReLU, mean pool -> n_outputs``.

    Convs have no bias and Kaiming-normal weights (fan-out, as the reference WRN); the
    output layer is Glorot-uniform with a zero bias.

    Parameters
    ----------
    input_shape : tuple of int
        ``(channels, height, width)`` of one sample; the network takes flat rows of
        ``prod(input_shape)`` values (NCHW order) or images of that shape.
    widths : sequence of 4 int
        Initial widths of the stem and of the three groups.
    n_outputs : int
    max_widths : sequence of 4 int or None
        Per-site maximum widths (``None``: no cap).
    n_blocks : int, default=4
        Blocks per group (4: WRN-28).
    """

    def __init__(self, input_shape, widths, n_outputs, max_widths=None, n_blocks=WRN28_BLOCKS):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4:
            raise ValueError(f"widths has {len(widths)} entries for 4 sites (stem, 3 groups).")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.stem = nn.Conv2d(self.input_shape[0], widths[0], 3, 1, 1, bias=False)
        self.groups = nn.ModuleList()
        channels = widths[0]
        for width, stride in zip(widths[1:], _STRIDES, strict=True):
            blocks = [PreActBlock(channels, width, stride, projection=True)]
            blocks += [PreActBlock(width, width) for _ in range(n_blocks - 1)]
            self.groups.append(nn.ModuleList(blocks))
            channels = width
        self.head_bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, int(n_outputs))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        self.max_widths = tuple(max_widths) if max_widths is not None else (None,) * 4
        if len(self.max_widths) != 4:
            raise ValueError(f"max_widths has {len(self.max_widths)} entries for 4 sites.")

    @property
    def widths(self):
        """Current widths of the stem and of the three groups."""
        return (self.stem.out_channels, *(blocks[0].conv1.out_channels for blocks in self.groups))

    def _images(self, X):
        return X.reshape(X.shape[0], *self.input_shape)

    def _run(self, images, n_sites=None):
        """The logits, and ``(inputs, Z, H)`` of each site (the first ``n_sites``: then no
        logits)."""
        kept = []
        X = self.stem(images)
        for g, blocks in enumerate(self.groups):
            for b, block in enumerate(blocks):
                X, A, R, Z, H = block.run(X)
                if b == 0:
                    if g == 0:
                        kept.append((images, A, R))  # the stem, after its BN and ReLU
                    kept.append((R, Z, H))
                    if n_sites is not None and len(kept) >= n_sites:
                        return None, kept[:n_sites]
        X = relu(self.head_bn(X)).mean(dim=(2, 3))
        return self.fc(X), kept

    def forward(self, X):
        record = self._recording()
        images = self._images(X)
        logits, kept = self._run(images)
        if record:
            self._keep(images, kept)
        return logits

    def _site_triples(self, images, n_sites=None):
        """``(inputs, Z, H)`` of the first ``n_sites`` sites (all where ``None``), in the
        module's current mode. The stem's ``inputs`` are the images, its ``Z`` the first
        block's BatchNorm output and its ``H`` their ReLU; a group's are its first conv's
        input, BatchNorm output and ReLU."""
        return self._run(images, n_sites)[1]

    def growth_sites(self):
        """The stem's site, then one tied site per group, in forward order."""
        first = self.groups[0][0]
        sites = [
            GrowthSite(
                name="stem",
                producer=self.stem,
                consumers=[Consumer(first.conv1), Consumer(first.proj)],
                activation=relu,
                norms=[first.bn1],
                max_width=self.max_widths[0],
                response=_response(self.stem, first.bn1),
            )
        ]
        for g, blocks in enumerate(self.groups):
            head, rest = blocks[0], blocks[1:]
            if g + 1 < len(self.groups):
                following = self.groups[g + 1][0]
                readers = [Consumer(following.conv1), Consumer(following.proj)]
                reader_norms = [following.bn1]
            else:
                readers, reader_norms = [Consumer(self.fc)], [self.head_bn]
            inner = [TiedChannels([b.conv1], [Consumer(b.conv2)], [b.bn2]) for b in rest]
            stream = TiedChannels(
                producers=[head.proj, *(b.conv2 for b in blocks)],
                consumers=[*(Consumer(b.conv1) for b in rest), *readers],
                norms=[*(b.bn1 for b in rest), *reader_norms],
            )
            sites.append(
                GrowthSite(
                    name=f"group{g + 1}",
                    producer=head.conv1,
                    consumers=[Consumer(head.conv2)],
                    activation=relu,
                    norms=[head.bn2],
                    max_width=self.max_widths[g + 1],
                    response=_response(head.conv1, head.bn2),
                    tied=[*inner, stream],
                )
            )
        return sites


def _response(conv, norm):
    def response(inputs, fan_in, bias):
        # New channels as they will be once added: identity BatchNorm entries (running
        # mean 0, variance 1), read in eval mode as the metric is.
        Z = F.conv2d(inputs, fan_in, bias, conv.stride, conv.padding)
        return rows(relu(Z / (1.0 + norm.eps) ** 0.5))

    return response
