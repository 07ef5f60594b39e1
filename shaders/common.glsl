// Shared by every shader: the workgroup size is specialization constant 0, and large grids
// fold into y (see vkr_grid), so a workgroup's linear index is:
#extension GL_EXT_control_flow_attributes : enable

layout(local_size_x_id = 0) in;

uint linear_group_id()
{
    return gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
}
