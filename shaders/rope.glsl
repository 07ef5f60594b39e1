// Rotary position embedding math, shared by rope.comp and the fused rope + KV store
// (kv_store.comp with ROPE_KV) so that both produce the same bits: the fused dispatch may
// replace rope followed by kv_store.
//
// As ggml computes it: theta_i = freq_scale * (pos * theta_scale^i) with theta_scale =
// base^(-2/n_rot) (passed from the host, powf) and the power formed by repeated float
// multiplication, so the angle is bit-identical to ggml's. Pairs: (2i, 2i+1) in adjacent
// mode, (i, i + n_rot/2) in half mode; dims from n_rot on pass through.

// sin and cos of a float angle, accurate for large angles: GPU sin/cos are specified only
// on [-pi, pi], so the angle is first reduced by 2 pi in four parts (Cody-Waite). The
// first three parts have at most 11 significant bits, so k * part is exact for k < 2^13
// (angles up to ~51000 rad) and each subtraction is exact.
void sincos_reduced(float a, out float s, out float c)
{
    const float inv_2pi = 0.15915494309189535;
    const float c1 = 6.28125;
    const float c2 = 0.0019350051879882812;
    const float c3 = 3.019813448190689e-07;
    const float c4 = 1.0253376273028358e-11;
    precise float k = round(a * inv_2pi);
    precise float r = a - k * c1;
    r = r - k * c2;
    r = r - k * c3;
    r = r - k * c4;
    s = sin(r);
    c = cos(r);
}

// sin and cos of pair i's angle at position pos. The loop runs i < n_rot / 2 times.
void rope_sincos(uint pos, uint i, float theta_scale, float freq_scale, out float s, out float c)
{
    precise float theta = float(pos);
    for (uint k = 0; k < i; k++)
        theta = theta * theta_scale;
    theta = freq_scale * theta;
    sincos_reduced(theta, s, c);
}

// The pair (x0, x1) rotated by the angle of (s, c). precise: no fused multiply-add, so each
// shader rounds the same way whether it keeps both results or one.
vec2 rope_rotate(float x0, float x1, float s, float c)
{
    precise float y0 = x0 * c - x1 * s;
    precise float y1 = x0 * s + x1 * c;
    return vec2(y0, y1);
}
