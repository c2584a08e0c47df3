"""The RNN generator's training pass as one autograd node, backpropagation through time written
out (``rnn.RNNCore``'s fast implementation; its reference is the step loop, ``rnn.RNNCore.reference``)."""

from __future__ import annotations

import torch

from suhmo.models.kernels.ops import cell_backward, double_g, linear, low, tanh_into, tanh_sigmoid


class RNNRollout(torch.autograd.Function):
    """The RNN generator's training pass (``rnn.RNNCore``: LSTM cell with BP, the deep-output
    head ``Linear -> LayerNorm -> LeakyReLU`` x 2 ``-> Linear``, the Euler integrator with optional
    reversion) over all ``O + n_future - 1`` steps as one autograd node, with backpropagation
    through time written out.

    Autograd records some 25 nodes per step for this loop, each run by its engine in the
    backward; at the cpu preset's sizes (32 rows, 64 units) that bookkeeping, not the
    arithmetic, is the cost. Here the forward runs without recording and writes every step's
    activations into buffers ``[T, B, ...]``; the backward runs the steps in reverse with the
    ATen backward kernels of each operation (``native_layer_norm_backward``,
    ``leaky_relu_backward``, ``lstm_cell_backward``), and forms the gradients of every weight
    once for all steps, one product over the stacked steps instead of one per step plus its
    accumulation. The same noise draws in the same order; equal to autograd over the loop
    within float rounding (tests/test_step_equivalence.py).

    Inputs: ``x [B, O, D]`` observed states and ``v0 [B, D]`` (no gradient), ``h0, c0 [B, H]``,
    ``rate [D]`` or None, the cell's ``w [F + (2H | H), 4H]`` (``[W_ih | W_hh]^T``) and ``b``, the
    head's ``W1, b1, g1, be1, W2, b2, g2, be2, W3, b3``, and ``meta = (n_future, vel_scale,
    pair, noise_fn, noise, eps1, eps2, slope, lowp)``, ``lowp`` (``train.amp``: ``torch.bfloat16``, else
    None) the operands' type of the cell's products, forward and backward, as in ``WindowLSTM``
    (the head's smaller products stay fp32). Returns the states ``[B, O + n_future - 1, D]``:
    the reconstructions of the observed frames 1..O-1, then the future ones.
    """

    @staticmethod
    def forward(ctx, x, v0, h0, c0, rate, w, b, W1, b1, g1, be1, W2, b2, g2, be2, W3, b3, meta):
        n_future, vs, pair, noise_fn, N, eps1, eps2, slope, lowp = meta
        B, O, D = x.shape
        H, M = h0.shape[1], W1.shape[0]
        T = O + n_future - 1
        F = 2 * D + N
        new = x.new_empty
        INP, GATES = new(T, B, F + (2 * H if pair else H)), new(T, B, 4 * H)
        CELLS, TC, Y0 = new(T, B, H), new(T, B, H), new(T, B, H + F)
        A1, N1, L1, A2, N2, L2 = (new(T, B, M) for _ in range(6))
        S1, S2 = new(2, T, B, 1), new(2, T, B, 1)  # LayerNorm mean and rstd per step
        DX0 = new(T, B, D) if rate is not None else None  # x0 - pos: the reversion's input
        P = new(B, T, D)
        # every step's views of the buffers, formed once (indexing them step by step costs more than the steps' own work)
        inp_, gates_, cells_, tc_, y0_ = INP.unbind(0), GATES.unbind(0), CELLS.unbind(0), TC.unbind(0), Y0.unbind(0)
        h_ = Y0[:, :, :H].unbind(0)
        fpos_, fvel_, fn_ = Y0[:, :, H:H + D].unbind(0), Y0[:, :, H + D:H + 2 * D].unbind(0), Y0[:, :, H + 2 * D:].unbind(0)
        gi_, gf_, gg_, go_ = (GATES[:, :, k * H:(k + 1) * H].unbind(0) for k in range(4))
        a1_, n1_, l1_, a2_, n2_, l2_ = A1.unbind(0), N1.unbind(0), L1.unbind(0), A2.unbind(0), N2.unbind(0), L2.unbind(0)
        m1_, r1_, m2_, r2_ = S1[0].unbind(0), S1[1].unbind(0), S2[0].unbind(0), S2[1].unbind(0)
        p_ = P.unbind(1)
        dx0_ = DX0.unbind(0) if DX0 is not None else None
        if pair:
            Q = INP.view(T, B // 2, 2, -1)
            ifeat_, ibp_, ibp1_, ih_ = (Q[..., :F].unbind(0), Q[:, :, :1, F:F + H].unbind(0),
                                        Q[:, :, 1:, F:F + H].unbind(0), Q[..., F + H:].unbind(0))
        else:
            ifeat_, ih_ = INP[:, :, :F].unbind(0), INP[:, :, F:].unbind(0)
        lnf, lrelu = torch.ops.aten.native_layer_norm.out, torch.ops.aten.leaky_relu.out
        x0 = x[:, 0]
        xs = x.unbind(1)
        pos, vel, h, c = x0, v0, h0, c0
        n = x.new_zeros(B, N)
        w1t, w2t, w3t = W1.t(), W2.t(), W3.t()
        wg, bg = double_g(w, 1), double_g(b, 0)  # tanh(y) = 2 sigmoid(2 y) - 1 (tanh_sigmoid)
        wg_lp = low(wg, lowp)
        one, neg1 = x.new_ones(()), x.new_full((), -1.0)
        for t in range(T):
            if t < O:  # teacher forcing
                pos = xs[t]
                if t > 0:
                    vel = xs[t] - xs[t - 1]
            fpos_[t].copy_(pos)
            torch.mul(vel, vs, out=fvel_[t])
            if N > 0:
                n = noise_fn(n, t)
                fn_[t].copy_(n)
            feat = y0_[t].narrow(1, H, F)
            if pair:  # [feat | BP(h) | h], BP = max over the pair, broadcast to both rows
                hp = h.view(B // 2, 2, H)
                ifeat_[t].copy_(feat.view(B // 2, 2, F))
                torch.amax(hp, 1, keepdim=True, out=ibp_[t])
                ibp1_[t].copy_(ibp_[t])
                ih_[t].copy_(hp)
            else:
                ifeat_[t].copy_(feat)
                ih_[t].copy_(h)
            if lowp is None:  # the g gate's pre-activation doubled (double_g)
                torch.addmm(bg, inp_[t], wg, out=gates_[t])
            else:
                torch.add(bg, torch.mm(inp_[t].to(lowp), wg_lp), out=gates_[t])
            gates_[t].sigmoid_()
            tanh_sigmoid(gg_[t], one, neg1)
            c = torch.mul(gf_[t], c, out=cells_[t]).addcmul_(gi_[t], gg_[t])
            h = torch.mul(go_[t], tanh_into(c, tc_[t], one, neg1), out=h_[t])
            lnf(torch.addmm(b1, y0_[t], w1t, out=a1_[t]), (M,), g1, be1, eps1, out0=n1_[t], out1=m1_[t], out2=r1_[t])
            lrelu(n1_[t], slope, out=l1_[t])
            lnf(torch.addmm(b2, l1_[t], w2t, out=a2_[t]), (M,), g2, be2, eps2, out0=n2_[t], out1=m2_[t], out2=r2_[t])
            lrelu(n2_[t], slope, out=l2_[t])
            out = torch.addmm(b3, l2_[t], w3t)
            if rate is not None:  # eq. 4 with reversion: x + v - k (x - x0) = x + (v + k (x0 - x))
                vel = torch.addcmul(out, rate, torch.sub(x0, pos, out=dx0_[t]))
            else:  # eq. 4
                vel = out
            pos = torch.add(pos, vel, out=p_[t])
        ctx.meta = (O, T, D, H, M, F, vs, pair, slope, lowp)
        ctx.save_for_backward(c0, rate, w, W1, g1, be1, W2, g2, be2, W3, INP, GATES, CELLS, TC, Y0, A1, N1, L1, A2, N2,
                              L2, S1, S2, DX0 if DX0 is not None else x.new_zeros(0))
        return P

    @staticmethod
    def backward(ctx, dP):
        (c0, rate, w, W1, g1, be1, W2, g2, be2, W3, INP, GATES, CELLS, TC, Y0, A1, N1, L1, A2, N2, L2, S1, S2,
         DX0) = ctx.saved_tensors
        O, T, D, H, M, F, vs, pair, slope, lowp = ctx.meta
        w_lp = low(w, lowp)
        B = dP.shape[0]
        nlb = torch.ops.aten.native_layer_norm_backward  # its weight gradients: formed once, after the loop
        lrb = torch.ops.aten.leaky_relu_backward.grad_input
        mask = [True, False, False]
        new = dP.new_empty
        DG, DA1, DN1, DA2, DN2, DOUT = new(T, B, 4 * H), new(T, B, M), new(T, B, M), new(T, B, M), new(T, B, M), new(T, B, D)
        dg_, da1_, dn1_, da2_, dn2_, dout_ = DG.unbind(0), DA1.unbind(0), DN1.unbind(0), DA2.unbind(0), DN2.unbind(0), DOUT.unbind(0)
        cells_, tc_ = CELLS.unbind(0), TC.unbind(0)
        g4_ = list(zip(*(GATES[:, :, j * H:(j + 1) * H].unbind(0) for j in range(4))))
        d4_ = list(zip(*(DG[:, :, j * H:(j + 1) * H].unbind(0) for j in range(4))))
        gates_ = GATES.unbind(0)
        a1_, n1_, a2_, n2_ = A1.unbind(0), N1.unbind(0), A2.unbind(0), N2.unbind(0)
        m1_, r1_, m2_, r2_ = S1[0].unbind(0), S1[1].unbind(0), S2[0].unbind(0), S2[1].unbind(0)
        dp_ = dP.unbind(1)
        if pair:  # amax's backward: the maxima of a pair share the gradient; which rows they are, for all steps at once
            Q = INP.view(T, B // 2, 2, -1)
            MAX = (Q[..., F + H:] == Q[..., F:F + H]).to(dP.dtype)  # [T, B/2, 2, H]
            max_, nmax_ = MAX.unbind(0), MAX.sum(2, keepdim=True).unbind(0)
        tmp = new(B, 4 * H)
        tmp_g, one = tmp[:, 2 * H:3 * H], dP.new_ones(())
        dpos_c = dvel_c = None  # gradients of step t+1's position and velocity inputs, when they were step t's outputs
        dh_c = None  # of h_t, from step t+1's cell input
        dc_c = None
        for t in range(T - 1, -1, -1):
            g_nxt = dp_[t] if dpos_c is None else dp_[t] + dpos_c
            dvel = dout_[t]
            if dvel_c is None:
                dvel.copy_(g_nxt)
            else:
                torch.add(g_nxt, dvel_c, out=dvel)
            dpos = g_nxt if rate is None else torch.addcmul(g_nxt, rate, dvel, value=-1.0)
            # the head, output to input
            lrb(dvel @ W3, n2_[t], slope, False, grad_input=dn2_[t])
            da2_[t].copy_(nlb(dn2_[t], a2_[t], (M,), m2_[t], r2_[t], g2, be2, mask)[0])
            lrb(da2_[t] @ W2, n1_[t], slope, False, grad_input=dn1_[t])
            da1_[t].copy_(nlb(dn1_[t], a1_[t], (M,), m1_[t], r1_[t], g1, be1, mask)[0])
            dy0 = da1_[t] @ W1  # [B, H + F]: of [h_t | feat_t]
            dh = dy0[:, :H] if dh_c is None else dy0[:, :H].add_(dh_c)
            dc = cell_backward(dh, g4_[t], gates_[t], tc_[t], cells_[t - 1] if t > 0 else c0, dc_c, d4_[t], dg_[t],
                               tmp, tmp_g, one)
            dc_c = dc.mul_(g4_[t][1])  # of c_{t-1}
            # dG_t w^T, [B, in]: of [feat | BP(h_{t-1}) | h_{t-1}]
            dinp = linear(dg_[t], w) if lowp is None else linear(dg_[t].to(lowp), w_lp).float()
            if pair:
                dh_c = dinp[:, F + H:]
                dbp = dinp[:, F:F + H].view(B // 2, 2, H).sum(1, keepdim=True)
                dh_c.view(B // 2, 2, H).addcmul_(max_[t], dbp.div_(nmax_[t]))
            else:
                dh_c = dinp[:, F:]
            if t >= O:  # position and velocity came from step t-1
                dfeat = dinp[:, :2 * D].add_(dy0[:, H:H + 2 * D])
                dpos_c = dfeat[:, :D].add_(dpos)
                dvel_c = dfeat[:, D:].mul_(vs)
            else:
                dpos_c = dvel_c = None
        TB = T * B
        # formed as [4H, in]: oneDNN's faster orientation
        dw = linear(low(DG.view(TB, -1), lowp).t(), low(INP.view(TB, -1), lowp).t()).t().to(w.dtype)
        db = DG.view(TB, -1).sum(0)
        dW1 = DA1.view(TB, M).t() @ Y0.view(TB, -1)
        dW2 = DA2.view(TB, M).t() @ L1.view(TB, M)
        dW3 = DOUT.view(TB, D).t() @ L2.view(TB, M)
        xh1 = (A1 - S1[0]).mul_(S1[1])  # the normalised inputs of the LayerNorms
        xh2 = (A2 - S2[0]).mul_(S2[1])
        dg1, dbe1 = (DN1 * xh1).view(TB, M).sum(0), DN1.view(TB, M).sum(0)
        dg2, dbe2 = (DN2 * xh2).view(TB, M).sum(0), DN2.view(TB, M).sum(0)
        drate = (DOUT * DX0).view(TB, D).sum(0) if rate is not None and ctx.needs_input_grad[4] else None
        return (None, None, dh_c.contiguous(), dc_c, drate, dw, db, dW1, DA1.view(TB, M).sum(0), dg1, dbe1, dW2,
                DA2.view(TB, M).sum(0), dg2, dbe2, dW3, DOUT.view(TB, D).sum(0), None)
