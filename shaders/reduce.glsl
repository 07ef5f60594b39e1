// Workgroup-wide sum and max, every invocation gets the result. Every invocation of the
// workgroup must call them in uniform control flow (they contain barriers).
//  - USE_SUBGROUP: subgroupAdd/Max, then one shared slot per subgroup (chosen when the
//    device has subgroup arithmetic);
//  - otherwise a shared-memory tree (the workgroup size must be a power of two).
// The workgroup size is at most RED_MAX (host code keeps it so).
#define RED_MAX 256

#ifdef USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require

shared float red_part[RED_MAX];

float wg_sum(float v)
{
    v = subgroupAdd(v);
    if (subgroupElect())
        red_part[gl_SubgroupID] = v;
    barrier();
    float s = 0.0;
    for (uint i = 0; i < gl_NumSubgroups; i++)
        s += red_part[i];
    barrier();
    return s;
}

float wg_max(float v)
{
    v = subgroupMax(v);
    if (subgroupElect())
        red_part[gl_SubgroupID] = v;
    barrier();
    float m = red_part[0];
    for (uint i = 1; i < gl_NumSubgroups; i++)
        m = max(m, red_part[i]);
    barrier();
    return m;
}

#else

shared float red_part[RED_MAX];

float wg_sum(float v)
{
    uint lid = gl_LocalInvocationID.x;
    red_part[lid] = v;
    barrier();
    for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
        if (lid < s)
            red_part[lid] += red_part[lid + s];
        barrier();
    }
    float r = red_part[0];
    barrier();
    return r;
}

float wg_max(float v)
{
    uint lid = gl_LocalInvocationID.x;
    red_part[lid] = v;
    barrier();
    for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
        if (lid < s)
            red_part[lid] = max(red_part[lid], red_part[lid + s]);
        barrier();
    }
    float r = red_part[0];
    barrier();
    return r;
}

#endif
