//! Rectified flow: schedules, samplers, noising and training targets. Never models.
