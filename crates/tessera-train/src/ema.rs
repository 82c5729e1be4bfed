//! Exponential moving average of parameters, the weights that get exported.

use std::collections::HashMap;

use candle_core::{Result, Tensor, Var};

pub struct Ema {
    pub decay: f64,
    /// name → averaged value (detached copies).
    pub shadow: HashMap<String, Tensor>,
}

impl Ema {
    pub fn new(named: &[(String, Var)], decay: f64) -> Result<Self> {
        let shadow = named
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?)))
            .collect::<Result<_>>()?;
        Ok(Self { decay, shadow })
    }

    /// Replaces the averages with saved ones (a checkpoint's, read on the CPU), each placed
    /// where its parameter lives; every name must be there.
    pub fn restore(&mut self, mut saved: HashMap<String, Tensor>) -> Result<()> {
        for (n, s) in self.shadow.iter_mut() {
            let t = saved
                .remove(n)
                .ok_or_else(|| candle_core::Error::Msg(format!("EMA state lacks `{n}`")))?;
            if t.dims() != s.dims() {
                candle_core::bail!(
                    "EMA state `{n}` has shape {:?}, parameter has {:?}",
                    t.dims(),
                    s.dims()
                )
            }
            *s = t.to_dtype(s.dtype())?.to_device(s.device())?;
        }
        Ok(())
    }

    /// `shadow ← d·shadow + (1-d)·param`, with `d = min(decay, (1+step)/(10+step))` so the
    /// average is not dominated by the random initialisation early on.
    pub fn update(&mut self, named: &[(String, Var)], step: usize) -> Result<()> {
        let d = self.decay.min((1.0 + step as f64) / (10.0 + step as f64));
        for (n, v) in named {
            if let Some(s) = self.shadow.get_mut(n) {
                *s = ((&*s * d)? + (v.as_tensor().detach() * (1.0 - d))?)?;
            }
        }
        Ok(())
    }
}
