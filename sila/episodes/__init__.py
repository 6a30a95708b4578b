"""Episodes: robot and egocentric recordings (generic layout, LeRobot) as `sources` rows."""
