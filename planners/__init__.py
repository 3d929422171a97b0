from planners.nnfm_planner import nnFMPlanner

__all__ = ["nnFMPlanner"]
