from nnfm_planners.nnfm_planner import nnFMPlanner

__all__ = ["nnFMPlanner"]
